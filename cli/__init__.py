"""Command-line interface: ``aware-restore`` / ``python -m aware_restore`` (a front end of the library in
``core/``; nothing in ``core/`` imports it).

Built-in sub-commands: ``info`` (model folders searched, files found and their detected family), ``convert``
(any supported checkpoint → inference-only safetensors) and ``download`` (official weights via
huggingface_hub). Each model family adds its own sub-commands from ``cli/<family>.py`` (``register``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

from .. import __version__
from ..core import paths, registry
from ..core.checkpoint import load_state_dict, save_safetensors
from ..core.dtypes import parse_dtype
from ..core.errors import AwareRestoreError, CheckpointError

log = logging.getLogger("aware_restore")

FAMILY_CLIS = ("daclip", "irsde", "ram", "seesr", "ssen", "auto")


def _cmd_info(args: argparse.Namespace) -> int:
    report = {"version": __version__, "roots": [], "files": []}
    for folder in paths.MODEL_FOLDERS:
        for d in paths.folder_dirs(folder, args.models_dir):
            report["roots"].append({"folder": folder, "path": str(d), "exists": d.is_dir()})
        for f in paths.model_files(folder, args.models_dir):
            entry = {"folder": folder, "file": str(f), "size_mb": round(f.stat().st_size / 2**20, 1)}
            try:
                sd = load_state_dict(f)
                entry["family"] = registry.detect_family(sd) or "unknown"
                entry["looks_like"] = registry.describe(sd)
            except CheckpointError as exc:
                entry.update(family="unreadable", kind=exc.kind, error=str(exc))
            except Exception as exc:  # noqa: BLE001 - one odd file must not lose the listing
                entry.update(family="unreadable", kind="unknown", error=f"{type(exc).__name__}: {exc}")
            report["files"].append(entry)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    lines = [f"AwareRestore {__version__}", "Model folders searched:"]
    lines += [f"  [{r['folder']:6}] {r['path']}{'' if r['exists'] else '  (missing)'}" for r in report["roots"]]
    if not report["roots"]:
        lines.append("  (none: pass --models-dir, or set AWARE_RESTORE_MODELS or COMFYUI_DIR)")
    lines.append("Model files found:")
    for e in report["files"]:
        lines.append(f"  {e['family']:17} {e['size_mb']:9.1f} MB  {e['file']}")
        if "error" in e:
            lines.append(f"      {e['kind']}: {e['error']}")
    if not report["files"]:
        lines.append("  (none)")
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


def _cmd_convert(args: argparse.Namespace) -> int:
    src, dst = Path(args.input), Path(args.output)
    if dst.suffix != ".safetensors":
        raise SystemExit("convert: the output file must end in .safetensors")
    sd = load_state_dict(src)
    arch = registry.detect(sd)
    if arch is None:
        raise SystemExit(f"convert: '{src}' is not a model this pack knows ({registry.describe(sd)}); "
                         "refusing to convert")
    family = arch.id
    kept = {k: v for k, v in sd.items() if arch.keep(k)}
    dtype = parse_dtype(args.dtype)
    save_safetensors(kept, dst, metadata={"family": family, "source": src.name}, dtype=dtype)
    sys.stdout.write(f"{family}: kept {len(kept)} of {len(sd)} tensors -> {dst} "
                     f"({dst.stat().st_size / 2**20:.1f} MB)\n")
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    from ..core import download

    if args.name == "list":
        for name, spec in download.OFFICIAL.items():
            sys.stdout.write(f"{name:28} -> models/{spec.folder}/  {spec.url}\n")
        return 0
    spec = download.spec(args.name)
    dirs = paths.folder_dirs(spec.folder, args.models_dir)
    if not dirs:
        raise SystemExit("download: no models folder; pass --models-dir or set COMFYUI_DIR")
    path = download.fetch(args.name, dirs[0])
    sys.stdout.write(f"{path}\n")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aware-restore", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=__version__)
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    parser.add_argument("--models-dir", action="append", default=[], metavar="DIR",
                        help="a ComfyUI-style models folder (repeatable); also $AWARE_RESTORE_MODELS, $COMFYUI_DIR")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="list the model folders searched and the model files found")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("convert", help="convert a checkpoint to an inference-only .safetensors file")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--dtype", choices=["fp16", "bf16", "fp32"], default="fp16")
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("download", help="download an official weight file into the right models folder "
                                         "('list' shows the known files)")
    p.add_argument("name")
    p.set_defaults(func=_cmd_download)

    for family in FAMILY_CLIS:
        importlib.import_module(f".{family}", __package__).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (AwareRestoreError, FileNotFoundError) as exc:  # the pack's own errors: the message says it all
        log.error("%s", exc)
        return 1
    except (OSError, ValueError, RuntimeError, KeyError, IndexError, TypeError, EOFError) as exc:
        # an error from inside a library the pack did not anticipate: one line, the traceback only with -v
        first = str(exc).splitlines()[0] if str(exc) else ""
        log.error("unexpected %s: %s (run with -v for the traceback, and please report it)", type(exc).__name__,
                  first)
        log.debug("traceback", exc_info=True)
        return 1
