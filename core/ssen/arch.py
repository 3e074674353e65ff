"""SSEN's architecture entry (see :mod:`..arch`)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..arch import Architecture, ModelDescriptor, Tiling, infer_or_raise, strict_load
from .model import SSENet, infer_config

TITLE = "SSEN reference-based SR"
FOLDER = "ssen"


def detect(keys: frozenset[str]) -> bool:
    """The SR backbone's own names (``head``, ``body_pre.*``, ``body_conv``, ``tail``), with or without the
    reference branch ``ssen.*`` (a ``use_ssen=False`` model has none)."""
    return {"head.weight", "tail.weight", "body_conv.weight"} <= keys and any(k.startswith("body_pre.") for k in keys)


def memory(config, batch: int, size: tuple[int, int]) -> int:
    """Activation bytes of one call on an ``h x w`` LR input (or tile): ~150 floats × nf per LR pixel for the
    backbone and the estimators, 40 × hr_nf for the ×4 output stage, ~1500 for the HR-sized reference images
    (pre-warped, gated, warped, detail) and the coarse match's displacement rows (measured: ~18 KB per LR pixel
    for the shipped model, so this over-estimates by ~1.5×)."""
    h, w = size
    return int(batch * h * w * 4 * (150 * config.nf + 40 * getattr(config, "hr_nf", 16) + 1500))


def match_memory(size: tuple[int, int]) -> int:
    """Bytes of the whole-image match that tiled inference runs before its tiles (coarse-flow rows, the HR
    pre-warp for the gate): measured +146 MiB at 256² and +283 MiB at 512² LR (≈ 1.1 KB per LR pixel)."""
    h, w = size
    return int(h * w * 1200)


def sr_memory(config, size: tuple[int, int], tile: int | None = None, batch: int = 1) -> int:
    """Bytes beyond the weights of SSEN on ``batch`` images of ``size``: one call on the whole batch, or, when
    the image is larger than ``tile`` (:func:`..infer.super_resolve`, one image at a time), one tile plus the
    whole-image match."""
    h, w = size
    if tile and max(h, w) > tile:
        return memory(config, 1, (min(h, tile), min(w, tile))) + match_memory(size)
    return memory(config, batch, size)


def load(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
         source: str = "<state dict>") -> ModelDescriptor:
    config = infer_or_raise(infer_config, sd, source, TITLE)
    with torch.device("meta"):
        model = SSENet(config)
    model = strict_load(model, sd, source=source, title=TITLE, config=config, dtype=dtype, device=device)
    return ModelDescriptor(model, ARCH.id, TITLE, config, source, tiling=Tiling.APPROXIMATE,
                           memory=lambda b, s: memory(config, b, s))


ARCH = Architecture("ssen", TITLE, FOLDER, detect, load)
ARCHITECTURES = (ARCH,)
