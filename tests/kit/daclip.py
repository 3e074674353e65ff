"""DA-CLIP tiny-model kit: the tiny golden checkpoints in the official layouts, in ``models/daclip/``.

* ``daclip_tiny.pt``: an open_clip training checkpoint like the released ``daclip_ViT-B-32.pt`` (``state_dict``
  wrapper with the ``visual.*`` aliases, AdamW optimizer state with numpy scalars, fp16 weights);
* ``daclip_tiny.safetensors``: the same inference weights without the aliases.

Tiny config: 64 px, patch 16, vision width 128 / 3 layers, text width 64 / 2 layers, embeddings 32-wide.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "daclip"
FILES = ("daclip_tiny.pt", "daclip_tiny.safetensors")
EMBED_DIM = 32


def write(models_root: Path) -> None:
    folder = Path(models_root) / "daclip"
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(FIXTURES / name, folder / name)
