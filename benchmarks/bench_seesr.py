"""SeeSR on CPU.

1. ``step``: seconds per sampling step (ControlNet + UNet on the CFG pair, DDPM update) and peak RSS with the
   REAL-SIZE SeeSR UNet + ControlNet (shapes from the shipped SD-2 configs, random weights), at a small latent.
2. ``x4_<in>``: peak RSS of a whole ×4 ``upscale`` run (resize, VAE encode, tiled sampling, VAE decode, colour fix)
   vs output size with latent tiling on. This curve uses the TINY parity models (SeeSR fixtures, a tiny tiled
   diffusers VAE, a stand-in text encoder), so it shows how memory SCALES with the output size (it must grow no
   faster than the pixel count), not the absolute memory of the real model.

Each case runs in a fresh process so peaks do not mix. Prints a table, writes benchmarks/results/seesr.json.

    python benchmarks/bench_seesr.py [--threads N] [--latent 32] [--steps 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "seesr.json"
FIX = ROOT / "tests" / "fixtures" / "seesr"


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _randomise(model) -> None:
    import torch

    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
            else:
                p.fill_(1.0 if "norm" in name else 0.0)


def case_step(latent: int, steps: int) -> dict:
    import torch
    from aware_restore.core.seesr import (
        SamplerOptions,
        build_controlnet,
        build_unet,
        sample,
    )
    from aware_restore.core.seesr.load import read_config

    data = ROOT / "core" / "seesr" / "data"
    models = []
    for build, cfg in ((build_unet, "unet_config.json"), (build_controlnet, "controlnet_config.json")):
        m = build(json.loads((data / cfg).read_text()), device="meta").to_empty(device="cpu")
        _randomise(m)
        models.append(m.eval().requires_grad_(False))
    params = sum(p.numel() for m in models for p in m.parameters())
    g = torch.Generator().manual_seed(0)
    stamps: list[float] = []
    t0 = time.perf_counter()
    sample(*models, lr_latent=torch.randn(1, 4, latent, latent, generator=g),
           cond_image=torch.rand(1, 3, 8 * latent, 8 * latent, generator=g),
           positive=torch.randn(1, 77, 1024, generator=g), negative=torch.randn(1, 77, 1024, generator=g),
           image_embeds=torch.randn(1, 145, 512, generator=g), generator=torch.Generator().manual_seed(1),
           opts=SamplerOptions(steps=steps, tile_size=None), progress=lambda d, t: stamps.append(time.perf_counter()))
    per = [b - a for a, b in zip([t0, *stamps[:-1]], stamps)]
    del read_config
    return {"case": f"step_latent{latent}", "latent": latent, "image_px": 8 * latent, "steps": steps,
            "seconds_per_step": min(per[1:] or per), "seconds_first_step": per[0], "params_m": params / 1e6,
            "peak_rss_mb": _rss_mb()}


def case_x4(size: int, tile: int, overlap: int) -> dict:
    import torch
    from aware_restore.core.ram import DapeEmbeds
    from aware_restore.core.seesr import (
        SamplerOptions,
        UpscaleOptions,
        load_seesr,
        plan_sizes,
        upscale,
    )
    from diffusers import AutoencoderKL

    unet, cn = load_seesr(FIX)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), norm_num_groups=4, layers_per_block=1,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            sample_size=256).eval()
    vae.enable_tiling()

    def enc(x):
        with torch.inference_mode():
            return vae.encode(x * 2 - 1).latent_dist.mode()

    def dec(z):
        with torch.inference_mode():
            return (vae.decode(z).sample + 1) / 2

    g = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, size, size, generator=g)
    emb = DapeEmbeds(torch.randn(1, 145, 512, generator=g), ("tag",))
    base = _rss_mb()
    t0 = time.perf_counter()
    out = upscale(img, unet, cn, encode_text=lambda t: torch.randn(len(t), 77, 32, generator=g), vae_encode=enc,
                  vae_decode=dec, dape_embeds=emb, seed=0,
                  options=UpscaleOptions(process_size=64, sampler=SamplerOptions(steps=1, tile_size=tile,
                                                                                 tile_overlap=overlap)))
    plan = plan_sizes(size, size, 4, 64)
    return {"case": f"x4_{size}", "input": size, "output": list(out.shape[-2:]), "latent": list(plan.latent_hw),
            "tile": tile, "overlap": overlap, "seconds": time.perf_counter() - t0, "rss_before_mb": base,
            "peak_rss_mb": _rss_mb(), "models": "tiny parity models (scaling curve only)"}


def _child(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    kind, _, val = args.case.partition(":")
    res = case_step(int(val), args.steps) if kind == "step" else case_x4(int(val), args.tile, args.overlap)
    sys.stdout.write(json.dumps(res) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--tile", type=int, default=32, help="latent tile for the x4 curve (tiny models)")
    p.add_argument("--overlap", type=int, default=8)
    p.add_argument("--sizes", default="64,128,256,512", help="input sizes of the x4 curve")
    p.add_argument("--quick", action="store_true", help="x4 curve only up to 256")
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        return _child(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s <= 256]
    cases = [f"step:{args.latent}", *[f"x4:{s}" for s in sizes]]
    rows = []
    for case in cases:
        cmd = [sys.executable, __file__, "--case", case, "--threads", str(args.threads), "--steps", str(args.steps),
               "--tile", str(args.tile), "--overlap", str(args.overlap)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if out.returncode != 0:
            sys.stderr.write(out.stderr[-2000:])
            continue
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        sys.stderr.write(f"done {case}\n")
    x4 = [r for r in rows if r["case"].startswith("x4_")]
    for r in x4:
        r["output_mpx"] = r["output"][0] * r["output"][1] / 1e6
    result = {"machine": {"platform": platform.platform(), "python": platform.python_version(),
                          "threads": args.threads}, "cases": rows}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    lines = ["| case | size | s/step or s | peak RSS MB |", "|---|---|---|---|"]
    for r in rows:
        if r["case"].startswith("step"):
            lines.append(f"| real-size UNet+ControlNet, CFG pair, {r['params_m']:.0f} M params | latent "
                         f"{r['latent']}² ({r['image_px']}² px) | {r['seconds_per_step']:.2f} s/step | "
                         f"{r['peak_rss_mb']:.0f} |")
        else:
            lines.append(f"| ×4 run, tiny models, tile {r['tile']}/{r['overlap']} | {r['input']}² → "
                         f"{r['output'][1]}×{r['output'][0]} | {r['seconds']:.1f} s | {r['peak_rss_mb']:.0f} |")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
