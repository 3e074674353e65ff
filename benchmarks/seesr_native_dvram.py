"""SeeSR native in a real ComfyUI with DynamicVRAM on or off: seconds per CFG denoiser call and peak memory.

Run by ``benchmarks/gpu_suite.py`` (cases ``seesr_native_dvram_on`` / ``_off``) in the ComfyUI's own Python with
the checkout on ``PYTHONPATH``, one process per mode (DynamicVRAM is chosen once per process, as ComfyUI's
``main.py`` does):

    PYTHONPATH=COMFYUI python benchmarks/seesr_native_dvram.py --comfy COMFYUI --models MODELS --mode on

``--models`` holds ``512-base-ema.safetensors`` and the ``seesr`` release folder (the test kit's
``kit.seesr.real_models()`` on a CPU). ``on``: on a GPU, DynamicVRAM is switched on the way ``main.py`` does it
(comfy-aimdo's devices, ``CoreModelPatcher = ModelPatcherDynamic``, ``aimdo_enabled``), found by feature test; on a
CPU (no aimdo there) only the lazy-weight ``comfy.ops`` are forced while SeeSR loads, which is the loading path the
pack controls. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path


def _enable_dynamic_vram(device) -> str:
    """Turn DynamicVRAM on as ComfyUI's main.py does, where the core and the device allow it."""
    import importlib.util

    if importlib.util.find_spec("comfy.memory_management") is None:
        return "unsupported (core without DynamicVRAM)"
    import comfy.memory_management
    import comfy.model_patcher

    if not hasattr(comfy.memory_management, "aimdo_enabled"):
        return "unsupported (core without DynamicVRAM)"
    if device.type != "cuda":
        return "lazy comfy.ops while loading (no aimdo on this device)"
    import comfy_aimdo.control

    if not comfy_aimdo.control.init_devices([device.index or 0]):
        return "aimdo failed to initialise"
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    return "on"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--models", required=True)
    ap.add_argument("--mode", choices=["on", "off"], required=True)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="fp16")
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    sys.argv = [sys.argv[0], *(["--cpu"] if a.device == "cpu" else [])]  # ComfyUI reads its options from argv
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.model_management as mm
    import comfy.samplers
    import comfy.sd
    import torch
    from aware_restore.core.ram import DapeEmbeds
    from aware_restore.nodes import seesr_native as native

    dev = mm.get_torch_device()
    state = _enable_dynamic_vram(dev) if a.mode == "on" else "off"
    models = Path(a.models)
    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(str(models / "512-base-ema.safetensors"),
                                                           output_vae=False, output_clip=False)
    lazy_load = a.mode == "on" and state.startswith("lazy")
    if lazy_load:
        import comfy.memory_management

        comfy.memory_management.aimdo_enabled = True
    try:
        seesr = native.load_native(models / "seesr", a.dtype)
    finally:
        if lazy_load:
            comfy.memory_management.aimdo_enabled = False
    g = torch.Generator().manual_seed(0)
    h = w = a.latent
    ctx = model.model.model_config.unet_config.get("context_dim", 1024)
    lat = torch.randn(1, 4, h, w, generator=g)
    hint = torch.rand(1, 8 * h, 8 * w, 3, generator=g)
    tp, tn = torch.randn(1, 77, ctx, generator=g), torch.randn(1, 77, ctx, generator=g)
    m, pos, neg = native.SeeSRApply.execute(model, [[tp, {}]], [[tn, {}]], seesr,
                                            DapeEmbeds(torch.randn(1, 145, 512, generator=g), ("",)), hint).args
    sigmas = comfy.samplers.calculate_sigmas(m.get_model_object("model_sampling"), "normal", 50)[:2]
    out = {}

    def fn(model_k, x, sigmas, extra_args=None, callback=None, disable=None, **kwargs):
        out["denoised"] = model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
        return x

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    times = []
    with torch.inference_mode():
        for _ in range(a.repeats + 1):
            t = time.perf_counter()
            comfy.samplers.sample(m, torch.randn(lat.shape, generator=g), pos, neg, 5.5, dev,
                                  comfy.samplers.KSAMPLER(fn), sigmas, latent_image=lat, seed=0)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            times.append(time.perf_counter() - t)
    peak = (torch.cuda.max_memory_allocated(dev) if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**20
    row = {"seconds": statistics.median(times[1:]), "peak_mb": peak, "dynamic_vram": state,
           "patcher": type(seesr.patcher).__name__, "finite": bool(torch.isfinite(out["denoised"]).all()),
           "latent": [h, w]}
    sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
