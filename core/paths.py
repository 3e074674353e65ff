"""Where model files are looked for outside ComfyUI (CLI, library users).

Model roots, in order: ``--models-dir`` arguments, ``$AWARE_RESTORE_MODELS`` (``os.pathsep``-separated),
``$COMFYUI_DIR/models``, and the ``models`` folder of the ComfyUI install this pack sits in
(``<ComfyUI>/custom_nodes/<pack>/``). Each family's files live in ``<root>/<folder>/`` (``daclip``, ``irsde``,
``dape``, ``seesr``, ``ssen``), exactly as in ComfyUI.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Iterable, Sequence
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


def first_match(names: Sequence[str], patterns: str | Sequence[str]) -> str | None:
    """The first of ``names`` (file names or relative paths; the file name is matched) for the first of
    ``patterns`` (globs, case-insensitive, in order of preference) that any name matches, or None. Put the official
    name first: ``("ram_swin_large_14m*", "ram_swin*")`` never picks ``ram_plus_swin_large_14m.pth`` before the
    RAM file, as a plain ``ram*`` would."""
    for pattern in (patterns,) if isinstance(patterns, str) else patterns:
        for name in names:
            if fnmatch.fnmatchcase(name.replace(os.sep, "/").rsplit("/", 1)[-1].lower(), pattern.lower()):
                return name
    return None


def find_model(folder: str, patterns: str | Sequence[str] = "*", extra: Iterable[str | os.PathLike] = ()
               ) -> Path | None:
    """The model file of ``folder`` chosen by :func:`first_match`, or None (the one model finder of the CLI and
    library; ComfyUI's loaders pick their default with :func:`first_match` on ComfyUI's file list)."""
    files = {str(p): p for p in model_files(folder, extra)}
    found = first_match(list(files), patterns)
    return None if found is None else files[found]


def require_model(folder: str, patterns: str | Sequence[str], extra: Iterable[str | os.PathLike] = (),
                  what: str = "model file", hint: str = "") -> Path:
    """:func:`find_model`, or a ``FileNotFoundError`` naming ``what`` was wanted, the folders searched and
    ``hint`` (what to do instead)."""
    extra = list(extra)
    found = find_model(folder, patterns, extra)
    if found is None:
        searched = ", ".join(str(d) for d in folder_dirs(folder, extra)) or "(no models folder configured)"
        raise FileNotFoundError(f"no {what} found in the '{folder}' folders searched: {searched}."
                                + (f" {hint}" if hint else ""))
    return found
