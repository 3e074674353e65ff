"""``aware-restore tag IMAGE...`` (RAM tags, DAPE merged by default) and ``aware-restore tag-convert`` (RAM +
optional DAPE → one inference-only fp16 .safetensors)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .common import add_device_options, apply_threads

log = logging.getLogger(__name__)


def resolve_files(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """RAM and DAPE files from ``--ram`` / ``--dape`` or the 'dape' model folders (also used by ``seesr``)."""
    from ..core.paths import find_model, require_model
    from ..core.ram.keys import DAPE_PATTERNS, RAM_PATTERNS

    ram = Path(args.ram) if args.ram else require_model(
        "dape", RAM_PATTERNS, args.models_dir, "RAM checkpoint (ram_swin_large_14m.pth)",
        "Pass --ram FILE or put ram_swin_large_14m.pth into <models>/dape/ (use --models-dir or "
        "$AWARE_RESTORE_MODELS / $COMFYUI_DIR).")
    if getattr(args, "no_dape", False):
        return ram, None
    dape = Path(args.dape) if args.dape else find_model("dape", DAPE_PATTERNS, args.models_dir)
    if dape is None:
        log.warning("no DAPE.pth found (pass --dape FILE); tagging with plain RAM")
    return ram, dape


def _cmd_tag(args: argparse.Namespace) -> int:
    from ..core.image import load_image
    from ..core.ram.load import load_tagger

    apply_threads(args)
    ram, dape = resolve_files(args)
    tagger = load_tagger(ram, dape, device=args.device)  # a DAPE given for an already-merged file is skipped
    results = []
    for path in args.images:
        image = load_image(path)
        payload = tagger.run(image, threshold=args.threshold, exclude=args.exclude, max_tags=args.max_tags,
                             antialias=not args.no_antialias)
        results.append({"image": str(path), "tags": payload.tags[0]})
    if args.json:
        doc = {"ram": str(ram), "dape": str(dape) if dape else None, "dape_merged": tagger.dape_merged,
               "results": results}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write("".join(f"{r['image']}: {r['tags']}\n" for r in results))
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:

    from ..core.dtypes import parse_dtype
    from ..core.ram.load import convert

    dtype = parse_dtype(args.dtype)
    out = convert(args.ram, args.output, dape=args.dape, dtype=dtype)
    sys.stdout.write(f"{out} ({out.stat().st_size / 2**20:.1f} MB, DAPE {'merged' if args.dape else 'not merged'})\n")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("tag", help="tag images with RAM (+ SeeSR's DAPE LoRA): the SeeSR hard prompt")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--ram", default=None, help="RAM checkpoint (default: ram_swin_large_14m*, else a converted "
                                               "ram*.safetensors, in <models>/dape)")
    p.add_argument("--dape", default=None, help="DAPE LoRA file (default: DAPE*.pth in <models>/dape)")
    p.add_argument("--no-dape", action="store_true", help="plain RAM tagging (no DAPE LoRA)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--threshold", type=float, default=None,
                   help="one threshold for every tag (default: RAM's per-class thresholds)")
    p.add_argument("--exclude", default="", help="comma-separated tags to drop")
    p.add_argument("--max-tags", type=int, default=None, help="keep at most N tags per image (most probable)")
    p.add_argument("--no-antialias", action="store_true",
                   help="resize without antialiasing, as SeeSR's pinned torchvision 0.15 did")
    add_device_options(p)
    p.set_defaults(func=_cmd_tag)

    c = subparsers.add_parser("tag-convert", help="RAM checkpoint (+ DAPE LoRA merged) -> inference-only "
                                                   ".safetensors (≈425 MB fp16)")
    c.add_argument("ram", help="ram_swin_large_14m.pth")
    c.add_argument("output", help="output .safetensors")
    c.add_argument("--dape", default=None, help="DAPE.pth to merge (the output then needs no DAPE file)")
    c.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    c.set_defaults(func=_cmd_convert)
