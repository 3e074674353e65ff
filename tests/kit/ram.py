"""Tiny RAM + DAPE files for node/workflow tests, in the official layouts, under the official names:
models/dape/ram_swin_large_14m.pth (a ``{'model': OrderedDict}`` pickle, with tag_encoder/text_decoder keys and
Swin buffers) and models/dape/DAPE.pth (a bare OrderedDict of LoRA tensors). They are the parity fixtures."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "ram"
RAM_NAME, DAPE_NAME = "ram_swin_large_14m.pth", "DAPE.pth"


def write(models_root: Path) -> None:
    folder = Path(models_root) / "dape"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(FIXTURES / "ram_tiny.pth", folder / RAM_NAME)
    shutil.copyfile(FIXTURES / "dape_tiny.pth", folder / DAPE_NAME)
