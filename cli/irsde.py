"""``aware-restore restore IMAGE --out OUT``: DA-CLIP universal restoration (IR-SDE) from the command line."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import add_device_options, apply_threads, image_command, log_steps, write_image

log = logging.getLogger(__name__)


def _find(folder: str, patterns: tuple[str, ...], models_dir: list[str], what: str) -> Path:
    from ..core.paths import require_model

    return require_model(folder, patterns, models_dir, what,
                         f"Pass --{'model' if folder == 'irsde' else 'daclip'} FILE, or --models-dir DIR, or run "
                         "`aware-restore download list`.")


def _cmd_restore(args: argparse.Namespace) -> int:
    from ..core.daclip import load_daclip
    from ..core.image import load_image
    from ..core.irsde import load_irsde, restore

    apply_threads(args)
    models_dir = list(getattr(args, "models_dir", []) or [])
    model_path = Path(args.model) if args.model else _find(
        "irsde", ("*universal-ir*", "*wild-ir*", "*"), models_dir, "IR-SDE model (universal-ir.pth / wild-ir.pth)")
    network = load_irsde(model_path, device=args.device)
    if args.daclip:
        daclip_path = Path(args.daclip)
    else:
        wanted = ("*wild-daclip*", "*L-14*") if network.variant == "wild" else ("*daclip_ViT-B-32*", "*B-32*")
        daclip_path = _find("daclip", (*wanted, "*"), models_dir, "DA-CLIP model")
    daclip = load_daclip(daclip_path).to(args.device)
    image = load_image(args.image, keep_alpha=True).to(args.device)
    log.info("restoring %s with %s (%s-ir) and %s", args.image, model_path.name, network.variant, daclip_path.name)

    out = restore(network, daclip, image, steps=args.steps, sampler=args.sampler, seed=args.seed,
                  tile=args.tile or None, tile_overlap=args.overlap, tile_mode=args.tile_mode, progress=log_steps())
    return write_image(out.cpu(), args.out)


def register(subparsers) -> None:
    p = image_command(subparsers, "restore", "universal restoration (DA-CLIP + IR-SDE) of one image",
                      "degraded input image", "output image path (same size as the input)")
    p.add_argument("--model", default=None,
                   help="IR-SDE network, universal-ir.pth or wild-ir.pth (default: first found in models/irsde)")
    p.add_argument("--daclip", default=None,
                   help="DA-CLIP model paired with the network: daclip_ViT-B-32.pt for universal-ir, "
                        "wild-daclip_ViT-L-14.pt for wild-ir (default: searched in models/daclip)")
    p.add_argument("--steps", type=int, default=100, choices=[100],
                   help="sampling steps; the networks were trained on the 100-step schedule (only 100 is offered)")
    p.add_argument("--sampler", choices=["posterior", "sde"], default="posterior",
                   help="posterior: the official optimal-posterior sampler; sde: Euler steps of the reverse SDE")
    p.add_argument("--seed", type=int, default=0, help="noise seed (all randomness comes from it)")
    p.add_argument("--tile", type=int, default=0, help="tile side in pixels for large images (0: whole image)")
    p.add_argument("--overlap", type=int, default=64, help="tile overlap in pixels ('tiles' mode)")
    p.add_argument("--tile-mode", choices=["exact", "tiles"], default="exact",
                   help="exact: low-memory evaluation with the whole-image result (default); tiles: the network on "
                        "overlapping tiles (approximate)")
    add_device_options(p)
    p.set_defaults(func=_cmd_restore)
