"""Build and load SeeSR's UNet and ControlNet (stock diffusers + RCA attachment) from the release folders.

The release (``seesr/unet`` and ``seesr/controlnet``) holds ``config.json`` + ``diffusion_pytorch_model.safetensors``
written by SeeSR's diffusers fork. Stock ``from_pretrained`` would silently drop every ``image_attentions`` key, so
the models are built from the config (on the meta device), RCA is attached, and the tensors are loaded with
``strict=True`` (``assign=True``: the file's tensors become the parameters, no second copy).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from ..checkpoint import load_state_dict
from ..errors import CheckpointError, WrongModelError
from ..arch import ModelDescriptor, Tiling
from .arch import CONTROLNET, FOLDER, UNET
from .rca import attach_rca

log = logging.getLogger(__name__)

_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors")


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"'{folder}' has no config.json; expected the SeeSR release layout "
                             "seesr/unet/{config.json, diffusion_pytorch_model.safetensors} and seesr/controlnet/...")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"'{path}' is not valid JSON: {exc}") from exc


def _stock_config(config: Mapping[str, Any], cls: type, what: str) -> dict[str, Any]:
    name = config.get("_class_name")
    if name not in (None, cls.__name__):
        raise WrongModelError(f"the {what} config names class {name!r}, expected {cls.__name__}")
    if not config.get("use_image_cross_attention", False):
        raise WrongModelError(f"the {what} config has no 'use_image_cross_attention: true': this is a plain "
                             "diffusers model, not SeeSR's (the release configs set it)")
    return {k: v for k, v in config.items() if k != "use_image_cross_attention" and not k.startswith("_")}


def build_unet(config: Mapping[str, Any], device: str | torch.device | None = "meta") -> UNet2DConditionModel:
    """Stock UNet2DConditionModel from a SeeSR UNet config, with RCA attached (random init, or meta)."""
    cfg = _stock_config(config, UNet2DConditionModel, "UNet")
    with torch.device(device or "cpu"):
        unet = UNet2DConditionModel.from_config(cfg)
    attach_rca(unet)
    return unet


def build_controlnet(config: Mapping[str, Any], device: str | torch.device | None = "meta") -> ControlNetModel:
    """Stock ControlNetModel from a SeeSR ControlNet config, with RCA attached."""
    cfg = _stock_config(config, ControlNetModel, "ControlNet")
    with torch.device(device or "cpu"):
        cn = ControlNetModel.from_config(cfg)
    attach_rca(cn)
    return cn


def _weights_file(folder: Path) -> Path:
    for name in _WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.glob("*.safetensors")) + sorted(p.name for p in folder.glob("*.bin"))
    if len(found) == 1:
        return folder / found[0]
    raise CheckpointError(f"'{folder}' holds no diffusion_pytorch_model.safetensors (found: {found or 'nothing'})")


def _load_part(folder: Path, arch, dtype: torch.dtype, device="cpu"):
    config = read_config(folder)
    _stock_config(config, UNet2DConditionModel if arch is UNET else ControlNetModel,
                  "UNet" if arch is UNET else "ControlNet")
    wfile = _weights_file(folder)
    sd = load_state_dict(wfile)
    arch.check(sd, source=str(wfile), folder=FOLDER)
    return arch.load(sd, dtype=dtype, device=device, source=str(wfile), config=config)


def find_parts(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(unet_dir, controlnet_dir)`` inside a SeeSR release folder (``<folder>/unet``, ``<folder>/controlnet``)."""
    root = Path(folder)
    if not root.is_dir():
        raise CheckpointError(f"SeeSR folder '{root}' does not exist", kind="missing", path=str(root))
    for base in (root, root / "seesr"):
        u, c = base / "unet", base / "controlnet"
        if u.is_dir() and c.is_dir():
            return u, c
    raise WrongModelError(f"'{root}' is not a SeeSR release folder: it needs the sub-folders 'unet' and "
                         "'controlnet' (each config.json + diffusion_pytorch_model.safetensors), as in the "
                         "official 'preset/models/seesr' download")


def load_seesr_descriptors(folder: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu"):
    """``(unet, controlnet)`` descriptors of a SeeSR release folder (config.json checked against the shapes)."""
    u, c = find_parts(folder)
    return _load_part(u, UNET, dtype, device), _load_part(c, CONTROLNET, dtype, device)


def load_seesr(folder: str | os.PathLike, dtype: torch.dtype = torch.float32
               ) -> tuple[UNet2DConditionModel, ControlNetModel]:
    """Load the SeeSR release folder → ``(unet, controlnet)``, stock diffusers models with RCA, eval mode.

    Both accept their diffusers call signatures plus ``image_encoder_hidden_states=[B, N, 512]``.
    """
    unet, controlnet = (d.model for d in load_seesr_descriptors(folder, dtype))
    log.info("SeeSR loaded from %s (UNet %d params, ControlNet %d params)", folder,
             sum(p.numel() for p in unet.parameters()), sum(p.numel() for p in controlnet.parameters()))
    return unet, controlnet


class SeeSRPair(torch.nn.Module):
    """The UNet and ControlNet (with RCA) as one module, so a memory manager loads and offloads them together."""

    def __init__(self, unet: torch.nn.Module, controlnet: torch.nn.Module):
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet


def load_seesr_pair(folder: str | os.PathLike, dtype: torch.dtype = torch.float32) -> ModelDescriptor:
    """The release folder as one descriptor (``arch`` ``"seesr"``, model :class:`SeeSRPair`)."""
    u, c = load_seesr_descriptors(folder, dtype)
    return ModelDescriptor(SeeSRPair(u.model, c.model), "seesr", "SeeSR (UNet + ControlNet)",
                           {"unet": u.config, "controlnet": c.config}, str(folder), tiling=Tiling.INTERNAL,
                           memory=u.memory)
