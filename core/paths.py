"""Where model files are looked for outside ComfyUI (CLI, library users).

Model roots, in order: ``--models-dir`` arguments, ``$AWARE_RESTORE_MODELS`` (``os.pathsep``-separated),
``$COMFYUI_DIR/models``, and the ``models`` folder of the ComfyUI install this pack sits in
(``<ComfyUI>/custom_nodes/<pack>/``). Each family's files live in ``<root>/<folder>/`` (``daclip``, ``irsde``,
``dape``, ``seesr``, ``ssen``), exactly as in ComfyUI.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .checkpoint import MODEL_SUFFIXES

MODEL_FOLDERS = ("daclip", "irsde", "dape", "seesr", "ssen")


def model_roots(extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    roots: list[Path] = [Path(p) for p in extra]
    env = os.environ.get("AWARE_RESTORE_MODELS")
    if env:
        roots += [Path(p) for p in env.split(os.pathsep) if p]
    comfy = os.environ.get("COMFYUI_DIR")
    if comfy:
        roots.append(Path(comfy) / "models")
    pack = Path(__file__).resolve().parent.parent
    if pack.parent.name == "custom_nodes":
        roots.append(pack.parent.parent / "models")
    seen: set[Path] = set()
    out = []
    for r in roots:
        r = r.expanduser().resolve()
        if r not in seen:
            seen.add(r)
            out.append(r)
    return out


def folder_dirs(folder: str, extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    return [r / folder for r in model_roots(extra)]


def model_files(folder: str, extra: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Model files (any depth) in every ``<root>/<folder>``, sorted by name."""
    found: list[Path] = []
    for d in folder_dirs(folder, extra):
        if d.is_dir():
            found += sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in MODEL_SUFFIXES)
    return found


def find_model(folder: str, pattern: str = "*", extra: Iterable[str | os.PathLike] = ()) -> Path | None:
    """First file in ``folder`` whose name matches ``pattern`` (glob), or None."""
    for p in model_files(folder, extra):
        if p.match(pattern):
            return p
    return None
