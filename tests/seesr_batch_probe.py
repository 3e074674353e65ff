"""Probe a REAL ComfyUI: does latent row i get image i's SeeSR prompt and DAPE embeddings when a batch of images is
sampled by core KSampler? Run by ``tests/test_comfyui_seesr_batch.py`` in its own process (ComfyUI on
``sys.path``, ``--cpu``):

    PYTHONPATH=COMFYUI_DIR python tests/seesr_batch_probe.py --models KIT_CACHE --dape DAPE_DIR --out r.json

The native graph of ``workflows/api/seesr_x4.json`` is driven node by node in-process (DAPE Tagger → SeeSR Text
Encode → SeeSR LR Embedding → SeeSR Apply → core ``nodes.common_ksampler`` (what KSampler runs) → VAE Decode →
AR Color Fix → SeeSR Final Resize) on a batch of two different images. A ``model_function_wrapper`` records every
model call (``cond_or_uncond`` and the ``c_crossattn`` rows the UNet gets for each latent row) and forward hooks on
SeeSR's RCA blocks record the image context each block gets. Reported: for every call and row, max |Δ| against
image i's prompt encoded alone (as core CLIPTextEncode does) and against the other image's, and the same for the
DAPE embeddings; output count and sizes. fp32, CPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def batch_images(h: int, w: int):
    """Two clearly different images (IMAGE [2,h,w,3]): smooth colour fields, one with stripes."""
    import torch

    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    a = torch.stack([xx, yy, 0.5 * (xx + yy)], -1)
    b = torch.stack([(torch.sin(12 * xx) + 1) / 2, 1 - yy, (torch.cos(9 * yy) + 1) / 2], -1)
    return torch.stack([a, b]).clamp(0, 1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True, help="kit cache folder (512-base-ema.safetensors + seesr/)")
    ap.add_argument("--dape", required=True, help="folder with the tiny ram_swin_large_14m.pth and DAPE.pth")
    ap.add_argument("--out", required=True)
    ap.add_argument("--size", default="32x40", help="W x H of the two input images")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--process-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    sys.argv = [sys.argv[0], "--cpu"]  # ComfyUI reads its options from argv (comfy on PYTHONPATH)
    import comfy.options

    comfy.options.enable_args_parsing()
    import comfy.sd
    import torch
    from aware_restore.core.ram import load_tagger_descriptor
    from aware_restore.core.seesr import plan_sizes
    from aware_restore.core.seesr.sampler import match_token_lengths
    from aware_restore.nodes import common, dape, seesr, seesr_native
    from aware_restore.nodes.utils import ARColorFix

    import nodes as core

    torch.set_num_threads(a.threads)
    models, dape_dir = Path(a.models), Path(a.dape)
    w, h = (int(v) for v in a.size.split("x"))
    model, clip, vae, _ = comfy.sd.load_checkpoint_guess_config(str(models / "512-base-ema.safetensors"))
    tagger = common.wrap(load_tagger_descriptor(dape_dir / "ram_swin_large_14m.pth", dape_dir / "DAPE.pth",
                                                dtype=torch.float32), "ram")
    native = seesr_native.load_native(models / "seesr", "fp32")

    images = batch_images(h, w)
    tags, _, embeds = dape.DAPETagger.execute(tagger, images).args
    positive, negative = seesr.SeeSRTextEncode.execute(clip, embeds).args
    latent, cond_image, plan = seesr.SeeSRLREmbedding.execute(vae, images, 4, a.process_size).args
    m, pos, neg = seesr_native.SeeSRApply.execute(model, positive, negative, native, embeds, cond_image).args

    calls, rca_calls = [], []

    def probe(apply_model, args):
        c = args["c"]
        calls.append({"cond_or_uncond": list(args["cond_or_uncond"]), "batch": int(args["input"].shape[0]),
                      "crossattn": c["c_crossattn"].detach().float().cpu().clone()})
        return apply_model(args["input"], args["timestep"], **c)

    m = m.clone()
    m.set_model_unet_function_wrapper(probe)
    hooks = []
    seesr_model = native.descriptor.model
    for where, rca in (("unet", seesr_model.rca.unet), ("controlnet", seesr_model.rca.controlnet)):
        for entry, block in rca.blocks():
            def grab(module, args, kwargs, output, where=where, path=entry.ldm_path):
                ctx = args[1] if len(args) > 1 else kwargs["context"]
                rca_calls.append({"where": where, "path": path, "context": ctx.detach().float().cpu()})
            hooks.append(block.register_forward_hook(grab, with_kwargs=True))
    try:
        (out_latent,) = core.common_ksampler(m, 3, a.steps, 5.5, "euler", "normal", pos, neg, latent, denoise=1.0)
    finally:
        for hk in hooks:
            hk.remove()
    decoded = core.VAEDecode().decode(vae, out_latent)[0]
    fixed = ARColorFix.execute(decoded, cond_image, "adain").args[0]
    (final,) = seesr.SeeSRFinalResize.execute(fixed, plan).args

    def encode(text):
        (cond, _), = clip.encode_from_tokens_scheduled(clip.tokenize(text))  # what core CLIPTextEncode does
        return cond.float().cpu()

    prompts = [seesr.build_prompts(t)[0] for t in tags]
    negative_text = seesr.build_prompts("")[1]
    states = embeds.embeds.float().cpu()
    B = images.shape[0]
    row_err, cross_err, neg_err = 0.0, float("inf"), 0.0
    for call in calls:
        x = call["crossattn"]
        for k, which in enumerate(call["cond_or_uncond"]):
            for i in range(B):
                row = x[k * B + i:k * B + i + 1]
                if which == 0:  # positive
                    for j in range(B):
                        ref = match_token_lengths(row, encode(prompts[j]))[1]
                        d = (row - ref).abs().max().item()
                        if i == j:
                            row_err = max(row_err, d)
                        else:
                            cross_err = min(cross_err, d)
                else:
                    ref = match_token_lengths(row, encode(negative_text))[1]
                    neg_err = max(neg_err, (row - ref).abs().max().item())
    emb_err, emb_cross = 0.0, float("inf")
    for rc in rca_calls:
        ctx = rc["context"]
        chunks = ctx.shape[0] // B
        for k in range(chunks):
            for i in range(B):
                for j in range(B):
                    d = (ctx[k * B + i] - states[j]).abs().max().item()
                    if i == j:
                        emb_err = max(emb_err, d)
                    else:
                        emb_cross = min(emb_cross, d)
    lib = plan_sizes(w, h, 4, a.process_size)
    report = {
        "input": [w, h], "tags": list(tags), "prompts": prompts, "model_calls": len(calls),
        "calls_cond_or_uncond": [c["cond_or_uncond"] for c in calls], "rows_per_call": [c["batch"] for c in calls],
        "positive_rows": int(positive[0][0].shape[0]), "latent_rows": int(latent["samples"].shape[0]),
        "max_abs_row_vs_own_prompt": row_err, "min_max_abs_row_vs_other_prompt": cross_err,
        "max_abs_uncond_vs_negative": neg_err,
        "rca_calls": len(rca_calls), "max_abs_rca_context_vs_own_embeds": emb_err,
        "min_max_abs_rca_context_vs_other_embeds": emb_cross,
        "outputs": int(final.shape[0]), "output_size": [int(final.shape[2]), int(final.shape[1])],
        "library_final_size": list(lib.final), "processed_size": list(plan.process),
        "decoded_size": [int(decoded.shape[2]), int(decoded.shape[1])],
        "finite": bool(torch.isfinite(final).all()),
    }
    Path(a.out).write_text(json.dumps(report, indent=1) + "\n")
    sys.stdout.write(json.dumps(report) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
