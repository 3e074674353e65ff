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

from ..checkpoint import CheckpointError, load_state_dict
from ..registry import require_family
from .rca import attach_rca

log = logging.getLogger(__name__)

UNET_RCA_BLOCKS_SD2 = 16
CONTROLNET_RCA_BLOCKS_SD2 = 7
_FORK_ONLY_KEYS = ("use_image_cross_attention",)
_WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin", "model.safetensors")


class SeeSRLoadError(ValueError):
    """The folder is not a SeeSR UNet/ControlNet release folder (or does not match its config)."""


def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise SeeSRLoadError(f"'{folder}' has no config.json; expected the SeeSR release layout "
                             "seesr/unet/{config.json, diffusion_pytorch_model.safetensors} and seesr/controlnet/...")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SeeSRLoadError(f"'{path}' is not valid JSON: {exc}") from exc


def _stock_config(config: Mapping[str, Any], cls: type, what: str) -> dict[str, Any]:
    name = config.get("_class_name")
    if name not in (None, cls.__name__):
        raise SeeSRLoadError(f"the {what} config names class {name!r}, expected {cls.__name__}")
    if not config.get("use_image_cross_attention", False):
        raise SeeSRLoadError(f"the {what} config has no 'use_image_cross_attention: true': this is a plain "
                             "diffusers model, not SeeSR's (the release configs set it)")
    return {k: v for k, v in config.items() if k not in _FORK_ONLY_KEYS and not k.startswith("_")}


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
    raise SeeSRLoadError(f"'{folder}' holds no diffusion_pytorch_model.safetensors (found: {found or 'nothing'})")


def load_into(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], source: str,
              dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Strictly load ``sd`` into a (meta-built) model, casting to ``dtype``; clear error on any mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if bad:
            k = bad[0]
            parts.append(f"{len(bad)} with other shapes (e.g. {k}: file {tuple(sd[k].shape)} vs config "
                         f"{tuple(own[k].shape)})")
        raise SeeSRLoadError(f"'{source}' does not match its config.json: " + "; ".join(parts))
    on_meta = next(model.parameters()).is_meta
    cast = {k: (v.to(dtype) if v.is_floating_point() else v) for k, v in sd.items()}
    if on_meta:
        cast = {k: v if v.is_meta else v.contiguous() for k, v in cast.items()}
    model.load_state_dict(cast, strict=True, assign=on_meta)
    return model.eval().requires_grad_(False)


def _load_part(folder: Path, build, family: str, dtype: torch.dtype):
    config = read_config(folder)
    model = build(config, device="meta")
    wfile = _weights_file(folder)
    try:
        sd = load_state_dict(wfile)
    except CheckpointError as exc:
        raise SeeSRLoadError(str(exc)) from exc
    require_family(sd, family, source=str(wfile), folder="seesr")
    return load_into(model, sd, str(wfile), dtype)


def find_parts(folder: str | os.PathLike) -> tuple[Path, Path]:
    """``(unet_dir, controlnet_dir)`` inside a SeeSR release folder (``<folder>/unet``, ``<folder>/controlnet``)."""
    root = Path(folder)
    if not root.is_dir():
        raise SeeSRLoadError(f"SeeSR folder '{root}' does not exist")
    for base in (root, root / "seesr"):
        u, c = base / "unet", base / "controlnet"
        if u.is_dir() and c.is_dir():
            return u, c
    raise SeeSRLoadError(f"'{root}' is not a SeeSR release folder: it needs the sub-folders 'unet' and "
                         "'controlnet' (each config.json + diffusion_pytorch_model.safetensors), as in the "
                         "official 'preset/models/seesr' download")


def load_seesr(folder: str | os.PathLike, dtype: torch.dtype = torch.float32
               ) -> tuple[UNet2DConditionModel, ControlNetModel]:
    """Load the SeeSR release folder → ``(unet, controlnet)``, stock diffusers models with RCA, eval mode.

    Both accept their diffusers call signatures plus ``image_encoder_hidden_states=[B, N, 512]``.
    """
    u, c = find_parts(folder)
    unet = _load_part(u, build_unet, "seesr_unet", dtype)
    controlnet = _load_part(c, build_controlnet, "seesr_controlnet", dtype)
    log.info("SeeSR loaded from %s (UNet %d params, ControlNet %d params)", folder,
             sum(p.numel() for p in unet.parameters()), sum(p.numel() for p in controlnet.parameters()))
    return unet, controlnet
