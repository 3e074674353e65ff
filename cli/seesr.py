"""``aware-restore seesr IMAGE --out OUT --sd2 PATH``: SeeSR ×4 real-world super-resolution from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import add_device_options, apply_threads, image_command, log_steps, write_image

log = logging.getLogger(__name__)


def _seesr_dir(args: argparse.Namespace) -> Path:
    from ..core import paths

    if args.seesr:
        return Path(args.seesr)
    for base in paths.folder_dirs("seesr", list(getattr(args, "models_dir", []) or [])):
        for cand in [base, *sorted(p for p in base.rglob("*") if p.is_dir())]:
            if (cand / "unet").is_dir() and (cand / "controlnet").is_dir():
                return cand
    raise SystemExit("seesr: no SeeSR folder (unet/ + controlnet/) found in the 'seesr' model folders; pass "
                     "--seesr DIR or --models-dir DIR")


def _dape_files(args: argparse.Namespace) -> tuple[Path, Path | None]:
    from .ram import resolve_files

    ram, dape = resolve_files(args)
    if dape is None:
        log.warning("seesr: using plain RAM embeddings (SeeSR was trained with DAPE)")
    return ram, dape


def _cmd_seesr(args: argparse.Namespace) -> int:
    import torch

    from ..core.dtypes import parse_dtype
    from ..core.image import load_image
    from ..core.ram import load_tagger
    from ..core.seesr import SamplerOptions, UpscaleOptions, load_seesr, upscale
    from ..core.seesr.sd2 import load_sd2

    apply_threads(args)
    device = torch.device(args.device)
    dtype = parse_dtype(args.dtype, "--dtype")
    if device.type == "cpu" and dtype != torch.float32:
        log.warning("seesr: %s on CPU is slow or unsupported; using fp32", args.dtype)
        dtype = torch.float32
    unet, controlnet = load_seesr(_seesr_dir(args), dtype=dtype)
    unet.to(device)
    controlnet.to(device)
    sd2 = load_sd2(args.sd2).to(device, dtype)
    ram, dape = _dape_files(args)
    tagger = load_tagger(ram, dape).to(device)
    image = load_image(args.image)

    opts = UpscaleOptions(upscale=args.upscale, process_size=args.process_size, user_prompt=args.prompt,
                          color_fix=args.color_fix,
                          sampler=SamplerOptions(steps=args.steps, cfg=args.cfg, control_scale=args.control_scale,
                                                 scheduler=args.scheduler, start=args.start,
                                                 tile_size=args.tile or None, tile_overlap=args.overlap))
    out = upscale(image, unet, controlnet, encode_text=sd2.encode_text, vae_encode=sd2.vae_encode,
                  vae_decode=sd2.vae_decode, dape=lambda x: tagger.run(x.to(device)), seed=args.seed,
                  options=opts, progress=log_steps())
    return write_image(out, args.out)


def register(subparsers) -> None:
    from ..core.seesr.schedule import SCHEDULER_NAMES
    from ..core.seesr.tiles import DEFAULT_OVERLAP, DEFAULT_TILE

    p = image_command(subparsers, "seesr", "SeeSR real-world super-resolution (x4) of one image",
                      "input (low-resolution) image", "output image path")
    p.add_argument("--sd2", required=True,
                   help="SD-2-base: diffusers folder (vae/, text_encoder/) or single-file checkpoint "
                        "(512-base-ema.safetensors / .ckpt), read offline")
    p.add_argument("--seesr", help="SeeSR release folder with unet/ and controlnet/ (default: models/seesr/*)")
    p.add_argument("--ram", help="ram_swin_large_14m.pth (default: models/dape)")
    p.add_argument("--dape", help="DAPE.pth (default: models/dape)")
    p.add_argument("--prompt", default="", help="user prompt added after the tags")
    p.add_argument("--upscale", type=int, default=4)
    p.add_argument("--process-size", type=int, default=512)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--cfg", type=float, default=5.5)
    p.add_argument("--control-scale", type=float, default=1.0)
    p.add_argument("--scheduler", choices=SCHEDULER_NAMES, default="ddpm")
    p.add_argument("--start", choices=("lr", "noise"), default="lr")
    p.add_argument("--color-fix", choices=("adain", "wavelet", "none"), default="adain")
    p.add_argument("--tile", type=int, default=DEFAULT_TILE, help="latent tile size (0 = no tiling)")
    p.add_argument("--overlap", type=int, default=DEFAULT_OVERLAP, help="latent tile overlap")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32")
    add_device_options(p)
    p.set_defaults(func=_cmd_seesr)
