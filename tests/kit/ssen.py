"""Tiny random SSEN checkpoint for node/workflow tests: models/ssen/ssen_tiny.safetensors (config in metadata)."""

from __future__ import annotations

from pathlib import Path

TINY = dict(nf=8, n_pre=1, n_post=1, ref_blocks=1, est_nf=8, groups=1)
FILENAME = "ssen_tiny.safetensors"


def tiny_model(seed: int = 0):
    import torch
    from aware_restore.core.ssen.model import SSENConfig, SSENet

    model = SSENet(SSENConfig(**TINY))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    return model.eval()


def write(models_root: Path) -> None:
    from aware_restore.core.ssen.loader import save_ssen

    save_ssen(tiny_model(), Path(models_root) / "ssen" / FILENAME, note={"trained_on": "random (test kit)"})


def holdout_photos():
    """The SSEN photo set's held-out photos (``training.ssen.photos.find_photos``: ``$AWARE_RESTORE_SSEN_PHOTOS``, a
    set cached in ``~/.cache/aware_restore``, or the held-out subset prepared there on first use with ``apt-get
    download``, ~160 MB); None when they cannot be had."""
    from aware_restore.training.ssen.photos import find_photos

    return find_photos()
