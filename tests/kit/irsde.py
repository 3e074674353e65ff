"""Tiny IR-SDE networks for node/workflow tests, in the official file layout (a plain state dict ``.pth``):
models/irsde/universal-ir.pth and models/irsde/wild-ir.pth. They are the parity fixtures (context width 32,
which pairs with the tiny DA-CLIP of the DA-CLIP kit)."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "irsde"
FILES = {"universal-ir.pth": "irsde_unet_tiny.safetensors", "wild-ir.pth": "wild_unet_tiny.safetensors"}


def write(models_root: Path) -> None:
    import torch
    from safetensors.torch import load_file

    folder = Path(models_root) / "irsde"
    folder.mkdir(parents=True, exist_ok=True)
    for name, fixture in FILES.items():
        sd = {k: v.float() for k, v in load_file(str(FIXTURES / fixture)).items()}
        torch.save(sd, folder / name)
