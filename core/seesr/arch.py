"""SeeSR's architecture entries (see :mod:`..arch`): the UNet and the ControlNet of the release folder, each an
SD-2 diffusers model with SeeSR's image cross-attention (RCA, ``*.image_attentions.*``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..arch import Architecture, ModelDescriptor, Tiling, infer_or_raise, strict_load
from ..shapes import has_prefix
from .build import build_controlnet, build_unet
from .config import infer_controlnet_config, infer_unet_config, merge_config

UNET_TITLE = "SeeSR UNet"
CONTROLNET_TITLE = "SeeSR ControlNet"
FOLDER = "seesr"
# rough activation need of one ControlNet+UNet call per latent pixel and batch item (fp16 SD2 at 96² ≈ 1.3 GB)
BYTES_PER_LATENT_PX = 150_000


def _has_rca(keys: frozenset[str]) -> bool:
    return any(".image_attentions." in k for k in keys)


def detect_controlnet(keys: frozenset[str]) -> bool:
    return has_prefix(keys, "controlnet_cond_embedding.") and _has_rca(keys)


def detect_unet(keys: frozenset[str]) -> bool:
    return "conv_out.weight" in keys and has_prefix(keys, "up_blocks.") and _has_rca(keys)


def memory(batch: int, size: tuple[int, int]) -> int:
    """``size`` is the latent (tile) size; CFG doubles the batch."""
    return int(2 * batch * size[0] * size[1] * BYTES_PER_LATENT_PX)


def _load(kind: str, sd: Mapping[str, torch.Tensor], dtype: torch.dtype, device, source: str,
          config: Mapping[str, Any] | None) -> ModelDescriptor:
    unet = kind == "unet"
    title = UNET_TITLE if unet else CONTROLNET_TITLE
    inferred = infer_or_raise(infer_unet_config if unet else infer_controlnet_config, sd, source, title)
    cfg = merge_config(config, inferred, "UNet" if unet else "ControlNet", source)
    cfg["use_image_cross_attention"] = True
    model = (build_unet if unet else build_controlnet)(cfg, device="meta")
    model = strict_load(model, sd, source=source, title=title, dtype=dtype, device=device)
    arch = UNET if unet else CONTROLNET
    return ModelDescriptor(model, arch.id, title, cfg, source, tiling=Tiling.INTERNAL, memory=memory)


def load_unet(sd, dtype=torch.float32, device="cpu", source="<state dict>", config=None) -> ModelDescriptor:
    return _load("unet", sd, dtype, device, source, config)


def load_controlnet(sd, dtype=torch.float32, device="cpu", source="<state dict>", config=None) -> ModelDescriptor:
    return _load("controlnet", sd, dtype, device, source, config)


UNET = Architecture("seesr_unet", UNET_TITLE, FOLDER, detect_unet, load_unet)
CONTROLNET = Architecture("seesr_controlnet", CONTROLNET_TITLE, FOLDER, detect_controlnet, load_controlnet)
ARCHITECTURES = (UNET, CONTROLNET)
