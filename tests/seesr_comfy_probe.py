"""Measure SeeSR native (a REAL ComfyUI) against the pack's diffusers path on the same weights.

Run by ``tests/test_comfyui_integration.py`` in its own process (ComfyUI on ``sys.path``, ``--cpu``):

    PYTHONPATH=COMFYUI_DIR python tests/seesr_comfy_probe.py --comfy COMFYUI_DIR --models KIT_CACHE --out r.json

For each case one denoiser evaluation goes through the real ``comfy.samplers.sample`` (a one-evaluation KSAMPLER
function; a ``CALC_COND_BATCH`` wrapper in front of everything captures the denoised cond / uncond): the core MODEL
from ``load_checkpoint_guess_config`` patched by ``SeeSRApply`` (+ ``SeeSRTiledSampling``), vs
``core.seesr.sampler.predict_noise`` with the diffusers UNet + ControlNet (+ RCA) from the SeeSR folder, per latent
row (row i with image i's text, DAPE embeddings and hint). Reported: max |Δε| for cond, uncond and the CFG result
(cfg 5.5), the ε scale, the start-point error of the first UNet input against ``√ᾱ·z + ε`` and seconds per
evaluation on both sides. The ``batch2_rows`` case samples two different images at once (ComfyUI stacks cond and
uncond: a model batch of 4) and also reports how far row 0 would be off with row 1's embeddings. The
``dynamic_loading`` case loads SeeSR with core's lazy-weight ``comfy.ops`` (DynamicVRAM's mode, forced on CPU where
the core has it) and repeats ``control``. fp32, CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

CASES = {
    # name: (latent h, w, control strength, tile (0 = off), overlap, start sigma index of 50 "normal" steps, batch)
    "control": (16, 16, 1.0, 0, 0, 0, 1),
    "no_control": (16, 16, 0.0, 0, 0, 0, 1),
    "control_t_mid": (16, 16, 1.0, 0, 0, 25, 1),
    "tiling_on_latent_fits_one_tile": (16, 16, 1.0, 16, 8, 0, 1),
    "tiled_6_tiles": (24, 32, 1.0, 16, 8, 0, 1),
    "batch2_rows": (16, 16, 1.0, 0, 0, 0, 2),
    "batch2_rows_tiled": (24, 32, 1.0, 16, 8, 0, 2),
    "dynamic_loading": (16, 16, 1.0, 0, 0, 0, 1),
}
CFG = 5.5


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--comfy", required=True)
    ap.add_argument("--models", required=True, help="kit cache folder (512-base-ema.safetensors + seesr/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI reads its options from argv (comfy on PYTHONPATH)
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.model_management as mm
    import comfy.patcher_extension as pe
    import comfy.samplers
    import comfy.sd
    import torch
    from aware_restore.core.ram import DapeEmbeds
    from aware_restore.core.seesr import load_seesr
    from aware_restore.core.seesr.sampler import (
        Conditioning,
        SamplerOptions,
        predict_noise,
    )
    from aware_restore.nodes import seesr_native as native

    torch.set_num_threads(a.threads)
    import importlib.util

    has_mem = importlib.util.find_spec("comfy.memory_management") is not None  # absent before DynamicVRAM
    models = Path(a.models)
    model, _, _, _ = comfy.sd.load_checkpoint_guess_config(str(models / "512-base-ema.safetensors"),
                                                           output_vae=False, output_clip=False)
    seesr = native.load_native(models / "seesr", "fp32")
    lazy = {"core_has_lazy_ops": has_mem and hasattr(importlib.import_module("comfy.memory_management"),
                                                     "aimdo_enabled")}
    if "dynamic_loading" in a.cases and lazy["core_has_lazy_ops"]:
        # The RCA blocks rebuilt with DynamicVRAM's lazy comfy.ops (Linear weights made when the state dict is
        # loaded) through the loader's own path; the ControlNet stays core's (forcing core's lazy mode on a CPU
        # would leave its file-dtype weights uncast: core casts them only in its dynamic patcher, on a GPU).
        import dataclasses

        import comfy.memory_management
        import comfy.ops
        from aware_restore.core.seesr import load_native_parts
        from aware_restore.nodes import seesr_patch

        before = comfy.memory_management.aimdo_enabled
        comfy.memory_management.aimdo_enabled = True
        try:
            cpu = torch.device("cpu")
            rca, patcher = seesr_patch.build_rca(load_native_parts(models / "seesr"), comfy.ops.manual_cast,
                                                 seesr_patch._attention(), seesr_patch.core_patcher_class(), cpu,
                                                 cpu, "probe")
        finally:
            comfy.memory_management.aimdo_enabled = before
        base = seesr.descriptor.model
        lazy_native = native.SeeSRNative(rca, patcher, base.control, base.unet_config, base.controlnet_config)
        seesr_lazy = dataclasses.replace(seesr, patcher=patcher,
                                         descriptor=dataclasses.replace(seesr.descriptor, model=lazy_native))
        linears = [m for m in rca.modules() if isinstance(m, torch.nn.Linear)]
        lazy.update(linear_layers=len(linears),
                    built_lazily=sum(hasattr(m, "comfy_need_lazy_init_bias") for m in linears),
                    patcher=type(patcher).__name__)
    unet, cn = load_seesr(models / "seesr", dtype=torch.float32)
    ms = model.get_model_object("model_sampling")
    results = {"comfyui": a.comfy, "model_config": type(model.model.model_config).__name__,
               "model_type": model.model.model_type.name, "dynamic_loading": lazy, "cases": {}}

    def one_eval(m, pos, neg, latent, seed, sigmas, cfg=CFG):
        cap = {}

        def grab(executor, mdl, conds, x_in, timestep, model_options):
            out = executor(mdl, conds, x_in, timestep, model_options)
            cap["conds_out"] = [o.clone() for o in out]
            return out

        m = m.clone()
        # first added = outermost: the capture sees what the sampler sees (after the tiling wrapper's blending)
        m.wrappers[pe.WrappersMP.CALC_COND_BATCH] = {"probe": [grab], **m.wrappers.get(pe.WrappersMP.CALC_COND_BATCH, {})}

        def fn(model_k, x, sigmas, extra_args=None, callback=None, disable=None):
            cap["x"], cap["sigma"] = x.clone(), float(sigmas[0])
            cap["denoised"] = model_k(x, sigmas[0] * x.new_ones([x.shape[0]]), **extra_args)
            return x

        noise = torch.randn(latent.shape, generator=torch.manual_seed(seed))
        comfy.samplers.sample(m, noise, pos, neg, cfg, mm.get_torch_device(), comfy.samplers.KSAMPLER(fn), sigmas,
                              latent_image=latent, seed=seed)
        cap["noise"] = noise
        return cap

    g = torch.Generator().manual_seed(5)
    for name in a.cases.split(","):
        h, w, strength, tile, overlap, start, batch = CASES[name]
        if name == "dynamic_loading" and not lazy["core_has_lazy_ops"]:
            continue
        lat = torch.randn(batch, 4, h, w, generator=g)  # unscaled, as VAEEncode gives
        hint = torch.rand(batch, 8 * h, 8 * w, 3, generator=g)  # IMAGE
        tp, tn = torch.randn(batch, 77, 1024, generator=g), torch.randn(1, 77, 1024, generator=g)
        states = torch.randn(batch, 145, 512, generator=g)
        sm = seesr_lazy if name == "dynamic_loading" else seesr
        m, pos, neg = native.SeeSRApply.execute(model, [[tp, {}]], [[tn, {}]], sm, DapeEmbeds(states, ("",) * batch),
                                                hint, strength).args
        if tile:
            m = native.SeeSRTiledSampling.execute(m, tile, overlap).args[0]
        sigmas = comfy.samplers.calculate_sigmas(ms, "normal", 50)[start:]
        t0 = time.perf_counter()
        with torch.inference_mode():
            cap = one_eval(m, pos, neg, lat, 7, sigmas)
        t1 = time.perf_counter()
        sig, x = cap["sigma"], cap["x"]
        x_vp = x / math.sqrt(1 + sig * sig)
        t = int(ms.timestep(torch.tensor(sig)))
        acp = 1 / (1 + sig * sig)
        z = lat * 0.18215
        start_err = (x_vp - (math.sqrt(acp) * z + (cap["noise"] if start == 0 else 0))).abs().max().item() \
            if start == 0 else None
        opts = SamplerOptions(tile_size=tile or None, tile_overlap=overlap, tile_batch=1, control_scale=strength)
        cond_bchw = hint.movedim(-1, 1)

        def ref(row, text, emb_row, x_vp=x_vp, t=t, states=states, cond_bchw=cond_bchw, opts=opts):
            return predict_noise(unet, cn, x_vp[row:row + 1], t, Conditioning(text, states[emb_row:emb_row + 1],
                                                                             cond_bchw[row:row + 1]), opts)

        with torch.inference_mode():
            ref_pos = torch.cat([ref(i, tp[i:i + 1], i) for i in range(batch)])
            t2 = time.perf_counter()
            ref_neg = torch.cat([ref(i, tn, i) for i in range(batch)])
            t3 = time.perf_counter()
            swapped = ref(0, tp[:1], 1) if batch > 1 else None
        eps = [(x - o) / sig for o in cap["conds_out"]]
        ref_cfg = ref_neg + CFG * (ref_pos - ref_neg)
        r = {"latent": [h, w], "batch": batch, "control_strength": strength, "tile": tile, "overlap": overlap,
             "sigma": sig, "t": t, "cfg": CFG,
             "max_abs_eps_cond": (eps[0] - ref_pos).abs().max().item(),
             "max_abs_eps_uncond": (eps[1] - ref_neg).abs().max().item(),
             "max_abs_eps_cfg": ((x - cap["denoised"]) / sig - ref_cfg).abs().max().item(),
             "eps_scale": ref_pos.abs().max().item(), "start_point_err": start_err,
             "native_s_per_cfg_eval": t1 - t0, "diffusers_s_per_cfg_eval": (t3 - t1),
             "diffusers_s_per_cond_eval": (t2 - t1) / batch}
        if swapped is not None:  # row 0 against image 1's embeddings: what a row mix-up would cost
            r["row0_vs_row1_embeds_max_abs_eps"] = (eps[0][:1] - swapped).abs().max().item()
        if name == "control":  # the RCA matters (the comparison is not vacuous): the same MODEL without RCA
            m0 = m.clone()
            m0.remove_wrappers_with_key(pe.WrappersMP.DIFFUSION_MODEL, native.KEY)
            with torch.inference_mode():
                cap0 = one_eval(m0, pos, neg, lat, 7, sigmas)
            r["rca_effect_max_abs_eps"] = ((cap0["x"] - cap0["conds_out"][0]) / sig - ref_pos).abs().max().item()
        results["cases"][name] = r
        sys.stdout.write(json.dumps({name: r}) + "\n")
        sys.stdout.flush()
    Path(a.out).write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
