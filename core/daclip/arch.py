"""DA-CLIP's architecture entry (see :mod:`..arch`): detection, inference keys, strict load, descriptor."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..arch import Architecture, ModelDescriptor, Tiling, infer_or_raise, strict_load
from ..shapes import has_prefix
from .config import infer_config
from .model import build_daclip

TITLE = "DA-CLIP"
FOLDER = "daclip"
ENCODE_BATCH = 8  # images per encoder call


def detect(keys: frozenset[str]) -> bool:
    return has_prefix(keys, "visual_control.") and has_prefix(keys, "clip.")


def keep(key: str) -> bool:
    """Inference weights: ``clip.*``, ``visual_control.*`` and ``logit_scale``; the ``visual.*`` aliases and
    anything else a training checkpoint carries are dropped."""
    return key == "logit_scale" or key.startswith(("clip.", "visual_control."))


def memory(config, batch: int, size: tuple[int, int]) -> int:
    """Activation bytes for encoding ``batch`` images (both towers, fp32, generous); ``size`` does not matter
    (every image is resized to the model's input size)."""
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    per_image = tokens * config.vision_width * 4 * 48 + tokens * tokens * config.vision_heads * 4 * 4
    return 64 * 2**20 + min(batch, ENCODE_BATCH) * per_image


def load(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
         source: str = "<state dict>") -> ModelDescriptor:
    weights = {k: v for k, v in sd.items() if keep(k)}
    config = infer_or_raise(infer_config, weights, source, TITLE)
    model = strict_load(build_daclip(config, device="meta"), weights, source=source, title=TITLE,
                        config=config.name, dtype=dtype, device=device)
    if not next(model.parameters()).is_meta:
        model.reset_buffers()
    return ModelDescriptor(model, ARCH.id, TITLE, config, source, tiling=Tiling.NONE,
                           memory=lambda b, s: memory(config, b, s))


ARCH = Architecture("daclip", TITLE, FOLDER, detect, load, keep)
ARCHITECTURES = (ARCH,)
