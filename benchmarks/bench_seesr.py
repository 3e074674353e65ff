"""SeeSR on CPU: the ComfyUI native path against the library's diffusers path, and memory at ×4 up to 2048².

Cases (each in a fresh process so peaks do not mix):

1. ``step_native`` / ``step_diffusers`` (needs a ComfyUI: ``--comfy`` or ``$COMFYUI_DIR``): seconds per sampling
   step (ControlNet + UNet + RCA on the CFG pair, Euler) with the SAME weights on both sides — the SD-2-width test
   model of ``tests/kit/seesr.py`` (reduced SD-2 UNet at 320/640 channels + its SeeSR folder; build it once with
   ``PYTHONPATH=tests python -c "from kit.seesr import real_models; print(real_models())"``
   and pass the folder as ``--kit``). Native: the core MODEL patched by SeeSR Apply through ``comfy.sample.sample``;
   diffusers: ``core.seesr.sample``.
2. ``x4_native_<out>`` (needs a ComfyUI): peak RSS of native tiled sampling (SeeSR Apply + SeeSR Tiled Sampling,
   one Euler step, CFG) for ×4 outputs 256² … 2048² (latent 32² … 256², with the 8× condition image), TINY random
   models (UNet 64/128 channels built in ComfyUI from an LDM state dict, a matching SeeSR folder). It shows how memory
   SCALES with the output (it must grow much slower than the pixel count), not the real model's absolute memory.
   VAE encode/decode are ComfyUI's own (VAEEncode / VAEDecodeTiled) and not part of this curve.
3. ``step_real_size`` (``--real-size``): the real-size SeeSR UNet + ControlNet (shipped SD-2 configs, random
   weights) on the diffusers path, one step at a small latent.

Prints a table and writes benchmarks/results/seesr.json.

    python benchmarks/bench_seesr.py [--comfy DIR] [--kit DIR] [--threads 1] [--latent 32] [--steps 2]
                                     [--outputs 256,512,1024,2048] [--real-size]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "seesr.json"


def _comfy_init():
    sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI reads its options from argv (comfy on PYTHONPATH)
    import comfy.options

    comfy.options.enable_args_parsing()


def _inputs(latent_hw: tuple[int, int], ctx: int, seed: int = 0):
    import torch

    h, w = latent_hw
    g = torch.Generator().manual_seed(seed)
    return {"latent": torch.randn(1, 4, h, w, generator=g), "hint": torch.rand(1, 8 * h, 8 * w, 3, generator=g),
            "pos": torch.randn(1, 77, ctx, generator=g), "neg": torch.randn(1, 77, ctx, generator=g),
            "states": torch.randn(1, 145, 512, generator=g)}


def _native_sample(model, seesr, inp, steps: int, tile: int | None = None, overlap: int = 8) -> list[float]:
    import comfy.sample
    import torch
    from aware_restore.core.ram import DapeEmbeds
    from aware_restore.nodes import seesr_native as native

    m, pos, neg = native.SeeSRApply.execute(model, [[inp["pos"], {}]], [[inp["neg"], {}]], seesr,
                                            DapeEmbeds(inp["states"], ("",)), inp["hint"]).args
    if tile:
        m = native.SeeSRTiledSampling.execute(m, tile, overlap).args[0]
    stamps = [time.perf_counter()]
    noise = comfy.sample.prepare_noise(inp["latent"], 0)
    with torch.inference_mode():
        comfy.sample.sample(m, noise, steps, 5.5, "euler", "normal", pos, neg, inp["latent"], denoise=1.0,
                            callback=lambda *a: stamps.append(time.perf_counter()), disable_pbar=True, seed=0)
    return [b - a for a, b in itertools.pairwise(stamps)]


def case_step_native(kit: Path, latent: int, steps: int) -> dict:
    _comfy_init()
    import comfy.sd
    from aware_restore.nodes import seesr_native as native

    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(str(kit / "512-base-ema.safetensors"), output_vae=False,
                                                           output_clip=False)
    seesr = native.load_native(kit / "seesr", "fp32")
    per = _native_sample(model, seesr, _inputs((latent, latent), 1024), steps)
    return {"case": "step_native", "latent": latent, "steps": steps, "seconds_per_step": min(per[1:] or per),
            "seconds_first_step": per[0], "peak_rss_mb": peak_rss_mb()}


def case_step_diffusers(kit: Path, latent: int, steps: int) -> dict:
    import torch
    from aware_restore.core.seesr import SamplerOptions, load_seesr, sample

    unet, cn = load_seesr(kit / "seesr", dtype=torch.float32)
    inp = _inputs((latent, latent), 1024)
    stamps = [time.perf_counter()]
    sample(unet, cn, lr_latent=inp["latent"] * 0.18215, cond_image=inp["hint"].movedim(-1, 1), positive=inp["pos"],
           negative=inp["neg"], image_embeds=inp["states"], generator=torch.Generator().manual_seed(0),
           opts=SamplerOptions(steps=steps, scheduler="euler", tile_size=None),
           progress=lambda d, t: stamps.append(time.perf_counter()))
    per = [b - a for a, b in itertools.pairwise(stamps)]
    return {"case": "step_diffusers", "latent": latent, "steps": steps, "seconds_per_step": min(per[1:] or per),
            "seconds_first_step": per[0], "peak_rss_mb": peak_rss_mb()}


def _tiny_models(folder: Path, seed: int = 0) -> dict:
    """A tiny SD-style UNet (64/128 channels, 64-wide heads, text width 64) as an LDM state dict and a matching
    SeeSR release folder in ``folder``; returns the LDM UNet tensors."""
    import torch
    from aware_restore.core.seesr import build_controlnet, build_unet
    from aware_restore.core.seesr.layout import split_rca, to_ldm
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    cfg = {"_class_name": "UNet2DConditionModel", "in_channels": 4, "out_channels": 4, "layers_per_block": 1,
           "block_out_channels": [64, 128], "down_block_types": ["CrossAttnDownBlock2D"] * 2,
           "up_block_types": ["CrossAttnUpBlock2D"] * 2, "attention_head_dim": [1, 2], "cross_attention_dim": 64,
           "use_linear_projection": True, "norm_num_groups": 32, "use_image_cross_attention": True}
    torch.manual_seed(seed)
    unet = build_unet(cfg, device="cpu")
    plain = UNet2DConditionModel.from_config({k: v for k, v in cfg.items()
                                              if k not in ("_class_name", "use_image_cross_attention")})
    plain.load_state_dict(split_rca(unet.state_dict())[0])
    base = ControlNetModel.from_unet(plain)
    cn = build_controlnet({"_class_name": "ControlNetModel", **dict(base.config), "use_image_cross_attention": True},
                          device="cpu")
    cn.load_state_dict({**cn.state_dict(), **base.state_dict()})
    for part, m in (("unet", unet), ("controlnet", cn)):
        d = folder / part
        d.mkdir(parents=True, exist_ok=True)
        c = {k: v for k, v in dict(m.config).items() if not k.startswith("_")}
        (d / "config.json").write_text(json.dumps({"_class_name": type(m).__name__, **c,
                                                   "use_image_cross_attention": True}))
        save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(d / "diffusion_pytorch_model.safetensors"))
    return to_ldm(split_rca(unet.state_dict())[0], cfg, "unet")


def case_x4_native(out_px: int, tile: int, overlap: int) -> dict:
    _comfy_init()
    import comfy.model_detection
    import comfy.model_management as mm
    import comfy.model_patcher
    from aware_restore.core.seesr import latent_grid
    from aware_restore.nodes import seesr_native as native

    with tempfile.TemporaryDirectory() as tmp:
        sd = _tiny_models(Path(tmp))
        mc = comfy.model_detection.model_config_from_unet(sd, "", use_base_if_no_match=True)
        base = mc.get_model(sd, "")
        base.load_model_weights(sd, "")
        model = comfy.model_patcher.ModelPatcher(base, mm.get_torch_device(), mm.unet_offload_device())
        seesr = native.load_native(Path(tmp), "fp32")
    latent = out_px // 8
    inp = _inputs((latent, latent), 64)
    before = peak_rss_mb()
    t0 = time.perf_counter()
    _native_sample(model, seesr, inp, 1, tile, overlap)
    n = len(latent_grid(latent, latent, tile, overlap))
    return {"case": f"x4_native_{out_px}", "output": out_px, "latent": latent, "tile": tile, "overlap": overlap,
            "tiles": n, "seconds": time.perf_counter() - t0, "rss_before_sampling_mb": before,
            "peak_rss_mb": peak_rss_mb(), "models": "tiny random models (scaling curve only)"}


def case_step_real_size(latent: int, steps: int) -> dict:
    import torch
    from aware_restore.core.seesr import (
        SamplerOptions,
        build_controlnet,
        build_unet,
        sample,
    )

    data = ROOT / "core" / "seesr" / "data"
    models = []
    for build, cfg in ((build_unet, "unet_config.json"), (build_controlnet, "controlnet_config.json")):
        m = build(json.loads((data / cfg).read_text()), device="meta").to_empty(device="cpu")
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel()) if p.ndim > 1
                        else torch.full_like(p, 1.0 if "norm" in name else 0.0))
        models.append(m.eval().requires_grad_(False))
    inp = _inputs((latent, latent), 1024)
    stamps = [time.perf_counter()]
    sample(*models, lr_latent=inp["latent"], cond_image=inp["hint"].movedim(-1, 1), positive=inp["pos"],
           negative=inp["neg"], image_embeds=inp["states"], generator=torch.Generator().manual_seed(1),
           opts=SamplerOptions(steps=steps, tile_size=None), progress=lambda d, t: stamps.append(time.perf_counter()))
    per = [b - a for a, b in itertools.pairwise(stamps)]
    return {"case": "step_real_size", "latent": latent, "steps": steps, "seconds_per_step": min(per[1:] or per),
            "params_m": sum(p.numel() for m in models for p in m.parameters()) / 1e6, "peak_rss_mb": peak_rss_mb()}


def _child(a: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(a.threads)
    kind, _, val = a.case.partition(":")
    if kind == "step_native":
        res = case_step_native(Path(a.kit), a.latent, a.steps)
    elif kind == "step_diffusers":
        res = case_step_diffusers(Path(a.kit), a.latent, a.steps)
    elif kind == "x4_native":
        res = case_x4_native(int(val), a.tile, a.overlap)
    else:
        res = case_step_real_size(a.latent, a.steps)
    sys.stdout.write("RESULT " + json.dumps(res) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--comfy", default=os.environ.get("COMFYUI_DIR"), help="ComfyUI checkout (native cases)")
    p.add_argument("--kit", help="the kit's SD-2-width model folder (tests/kit/seesr.py real_models())")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--latent", type=int, default=32, help="latent side of the per-step cases")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--tile", type=int, default=32, help="latent tile of the x4 curve (tiny models)")
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--outputs", default="256,512,1024,2048", help="output sides of the x4 curve")
    p.add_argument("--real-size", action="store_true", help="also time the real-size models (diffusers, slow)")
    p.add_argument("--case", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.case:
        return _child(a)
    cases = []
    if a.comfy and a.kit:
        cases += ["step_native", "step_diffusers"]
    if a.comfy:
        cases += [f"x4_native:{o}" for o in a.outputs.split(",")]
    if a.real_size:
        cases.append("step_real_size")
    if not cases:
        raise SystemExit("nothing to run: pass --comfy (and --kit) for the native cases, or --real-size")
    rows = []
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    if a.comfy:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [a.comfy, env.get("PYTHONPATH")]))
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--threads", str(a.threads), "--latent", str(a.latent),
               "--steps", str(a.steps), "--tile", str(a.tile), "--overlap", str(a.overlap), "--kit", str(a.kit)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env, cwd=a.comfy or None)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
        if out.returncode != 0 or not lines:
            sys.stderr.write(f"{case} failed:\n{out.stderr[-3000:]}\n")
            continue
        rows.append(json.loads(lines[-1][len("RESULT "):]))
        sys.stderr.write(f"done {case}\n")
    x4 = [r for r in rows if r["case"].startswith("x4_native_")]
    if x4:
        first = x4[0]
        for r in x4:
            r["pixels_x"] = (r["output"] / first["output"]) ** 2
            r["rss_growth_mb"] = r["peak_rss_mb"] - first["peak_rss_mb"]
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(), "threads": a.threads,
                          "device": "cpu"}, "cases": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| case | size | time | peak RSS MB |", "|---|---|---|---|"]
    for r in rows:
        if r["case"].startswith("step"):
            lines.append(f"| {r['case']} (CFG pair, ControlNet + UNet + RCA) | latent {r['latent']}² | "
                         f"{r['seconds_per_step']:.2f} s/step | {r['peak_rss_mb']:.0f} |")
        else:
            lines.append(f"| ×4 native tiled, tiny models, tile {r['tile']}/{r['overlap']} ({r['tiles']} tiles) | "
                         f"{r['output']}² (latent {r['latent']}²) | {r['seconds']:.1f} s/step | "
                         f"{r['peak_rss_mb']:.0f} (+{r['rss_growth_mb']:.0f} for ×{r['pixels_x']:.0f} pixels) |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
