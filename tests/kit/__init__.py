"""Tiny-model kit: writes tiny random checkpoints in every family's OFFICIAL file layout into a ComfyUI-style
models tree (``<root>/<folder>/...``). Each family module ``kit/<family>.py`` defines ``write(models_root)``.

A plain package (relative imports only, whatever name it is imported under): the tests import it as ``kit`` (pytest
puts ``tests/`` on the path); anything else runs it from ``tests/``: ``python -m kit MODELS_ROOT`` (see
``__main__.py``), as ``docs/render_workflows.py`` does."""

from __future__ import annotations

import importlib
from pathlib import Path

FAMILIES = ("daclip", "irsde", "ram", "seesr", "ssen")


def build_models_tree(models_root: Path) -> list[str]:
    """Write every available family's tiny models; return the families written."""
    written = []
    models_root.mkdir(parents=True, exist_ok=True)
    for fam in FAMILIES:
        try:
            module = importlib.import_module(f".{fam}", __name__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__name__}.{fam}":
                continue
            raise
        module.write(models_root)
        written.append(fam)
    return written
