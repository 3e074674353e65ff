"""DA-CLIP tiny-model kit: the tiny golden checkpoints in the official layouts, in ``models/daclip/``.

* ``daclip_ViT-B-32.pt``: the tiny golden ``daclip_tiny.pt`` under the official file name, an open_clip training
  checkpoint like the released one (``state_dict`` wrapper with the ``visual.*`` aliases, AdamW optimizer state
  with numpy scalars, fp16 weights), so the example workflows run unchanged;
* ``daclip_tiny.safetensors``: the same inference weights without the aliases.

Tiny config: 64 px, patch 16, vision width 128 / 3 layers, text width 64 / 2 layers, embeddings 32-wide.
"""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "daclip"
FILES = {"daclip_ViT-B-32.pt": "daclip_tiny.pt", "daclip_tiny.safetensors": "daclip_tiny.safetensors"}
EMBED_DIM = 32


def write(models_root: Path) -> None:
    folder = Path(models_root) / "daclip"
    folder.mkdir(parents=True, exist_ok=True)
    for name, fixture in FILES.items():
        shutil.copyfile(FIXTURES / fixture, folder / name)
