"""``aware-restore classify IMAGE... [--model FILE] [--json]``: DA-CLIP degradation probabilities per image."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)


def default_model(extra: list[str]) -> Path:
    """The DA-CLIP file in the ``daclip`` model folders (names containing 'daclip' first)."""
    from ..core.paths import require_model

    return require_model("daclip", ("*daclip*", "*"), extra, "DA-CLIP model",
                         "Pass --model FILE, or put daclip_ViT-B-32.pt in a 'daclip' models folder (add roots with "
                         "--models-dir).")


def _cmd_classify(args: argparse.Namespace) -> int:
    import torch

    from ..core.daclip import DEGRADATIONS, load_daclip, parse_labels
    from ..core.daclip.classify import encode_images, probabilities, text_features
    from ..core.image import load_image

    model_path = Path(args.model) if args.model else default_model(args.models_dir)
    labels = parse_labels(args.labels) if args.labels else list(DEGRADATIONS)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_daclip(model_path, device=device)
    text = text_features(model, labels)
    report = {"model": str(model_path), "config": model.config.name, "labels": labels, "images": []}
    for image in args.images:
        embeds = encode_images(model, load_image(image))
        probs = probabilities(embeds.degradation, text)[0]
        table = {label: round(float(p), 6) for label, p in zip(labels, probs)}
        report["images"].append({"image": image, "top": labels[int(probs.argmax())], "probabilities": table})
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    lines = [f"DA-CLIP {report['config']} ({model_path.name})"]
    for entry in report["images"]:
        ranked = sorted(entry["probabilities"].items(), key=lambda kv: -kv[1])[: max(1, args.top_k)]
        lines.append(f"{entry['image']}: " + ", ".join(f"{label} {p:.3f}" for label, p in ranked))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("classify", help="DA-CLIP: which degradations (blur, haze, rain, ...) each image has")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files")
    p.add_argument("--model", help="DA-CLIP checkpoint (.pt or .safetensors); default: the first file in the "
                                   "'daclip' models folder")
    p.add_argument("--labels", help="comma-separated labels instead of the ten DA-CLIP degradations")
    p.add_argument("--top-k", type=int, default=3, help="labels listed per image in the text output (default 3)")
    p.add_argument("--device", default="auto", help="cpu, cuda, ... (default: cuda when available)")
    p.add_argument("--json", action="store_true", help="print all probabilities as JSON")
    p.set_defaults(func=_cmd_classify)
