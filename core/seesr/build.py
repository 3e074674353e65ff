"""SeeSR's UNet and ControlNet as stock diffusers models built from their configs, with RCA attached (random init,
or on the meta device for a strict load of the release tensors). Used by the architecture entries (:mod:`.arch`)
and the release-folder loaders (:mod:`.load`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from ..errors import WrongModelError
from .rca import attach_rca


def stock_config(config: Mapping[str, Any], cls: type, what: str) -> dict[str, Any]:
    name = config.get("_class_name")
    if name not in (None, cls.__name__):
        raise WrongModelError(f"the {what} config names class {name!r}, expected {cls.__name__}")
    if not config.get("use_image_cross_attention", False):
        raise WrongModelError(f"the {what} config has no 'use_image_cross_attention: true': this is a plain "
                             "diffusers model, not SeeSR's (the release configs set it)")
    return {k: v for k, v in config.items() if k != "use_image_cross_attention" and not k.startswith("_")}


def _build(cls: type, config: Mapping[str, Any], what: str, device: str | torch.device | None):
    cfg = stock_config(config, cls, what)
    with torch.device(device or "cpu"):
        model = cls.from_config(cfg)
    attach_rca(model)
    return model


def build_unet(config: Mapping[str, Any], device: str | torch.device | None = "meta") -> UNet2DConditionModel:
    """Stock UNet2DConditionModel from a SeeSR UNet config, with RCA attached (random init, or meta)."""
    return _build(UNet2DConditionModel, config, "UNet", device)


def build_controlnet(config: Mapping[str, Any], device: str | torch.device | None = "meta") -> ControlNetModel:
    """Stock ControlNetModel from a SeeSR ControlNet config, with RCA attached."""
    return _build(ControlNetModel, config, "ControlNet", device)
