"""Load SeeSR's UNet and ControlNet from the release folders: whole, as stock diffusers models with RCA
attached (library / CLI), or as the parts the ComfyUI native path needs (:func:`load_native_parts`).

The release (``seesr/unet`` and ``seesr/controlnet``) holds ``config.json`` + ``diffusion_pytorch_model.safetensors``
written by SeeSR's diffusers fork. Stock ``from_pretrained`` would silently drop every ``image_attentions`` key, so
the models are built from the config (on the meta device), RCA is attached, and the tensors are loaded with
``strict=True`` (``assign=True``: the file's tensors become the parameters, no second copy).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import ControlNetModel, UNet2DConditionModel

from ..arch import infer_or_raise, strict_load
from ..checkpoint import load_state_dict
from ..errors import CheckpointError, WrongModelError
from ..registry import require
from .arch import CONTROLNET, FOLDER, UNET
from .build import stock_config
from .config import infer_controlnet_config, infer_unet_config, merge_config
from .layout import RCA_MARK, rca_entries, split_rca, to_ldm
from .rca import Attention, RCASet

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
    stock_config(config, UNet2DConditionModel if arch is UNET else ControlNetModel,
                  "UNet" if arch is UNET else "ControlNet")
    wfile = _weights_file(folder)
    sd = load_state_dict(wfile)
    require(sd, arch.id, source=str(wfile), folder=FOLDER)
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


@dataclass
class NativeParts:
    """What the ComfyUI native path needs from a release folder (no diffusers model is built):

    * ``unet_rca``: the UNet's 16 RCA blocks only (:class:`RCASet`; the base UNet is the user's SD-2 MODEL, whose
      weights SeeSR kept frozen during training);
    * ``controlnet_rca``: the ControlNet's 7 RCA blocks;
    * ``controlnet_ldm``: the ControlNet's other tensors under LDM key names (for ComfyUI's own ``cldm`` ControlNet);
    * the two configs (``config.json`` checked against the shapes).
    """

    unet_rca: RCASet
    controlnet_rca: RCASet
    controlnet_ldm: dict[str, torch.Tensor]
    unet_config: dict[str, Any]
    controlnet_config: dict[str, Any]
    source: str

    @property
    def params(self) -> int:
        return (sum(p.numel() for p in self.unet_rca.parameters()) + sum(
            p.numel() for p in self.controlnet_rca.parameters()) + sum(v.numel() for v in self.controlnet_ldm.values()))


def _lazy_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], Callable[[list[str]], dict[str, torch.Tensor]]]:
    """``(meta, read)``: the file's keys as meta tensors of the right shapes (read from the safetensors header, no
    data), and ``read(keys)`` which loads just those tensors. Non-safetensors files are read whole."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            meta = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}  # noqa: SIM118 (safe_open)
    except Exception:  # noqa: BLE001 - not a safetensors file (or an old safetensors): read it whole
        sd = load_state_dict(path)
        return {k: v for k, v in sd.items()}, lambda keys: {k: sd[k] for k in keys}

    def read(keys: list[str]) -> dict[str, torch.Tensor]:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in keys}

    return meta, read


def _rca_set(entries, sd: Mapping[str, torch.Tensor], source: str, title: str, dtype, device, ops, attention
             ) -> RCASet:
    rca = RCASet(entries, ops=ops, attention=attention, device="meta")
    return strict_load(rca, sd, source=source, title=title, dtype=dtype, device=device)


def load_native_parts(folder: str | os.PathLike, dtype: torch.dtype = torch.float32, device="cpu",
                      ops: Any = torch.nn, attention: Attention | None = None) -> NativeParts:
    """The RCA blocks of both release models and the ControlNet's base tensors in LDM layout.

    Only the UNet's ``image_attentions`` tensors are read from its file (a few hundred MB of the 3.5 GB); the
    architecture checks (``detect``, shapes vs ``config.json``) and the strict loads are the same as for the full
    models. ``ops`` / ``attention`` are the RCA blocks' layer classes and attention function (:mod:`.rca`).
    """
    u_dir, c_dir = find_parts(folder)
    ucfg_json = read_config(u_dir)
    stock_config(ucfg_json, UNet2DConditionModel, "UNet")
    ufile = _weights_file(u_dir)
    meta, read = _lazy_state_dict(ufile)
    require(meta, UNET.id, source=str(ufile), folder=FOLDER)
    ucfg = merge_config(ucfg_json, infer_or_raise(infer_unet_config, meta, str(ufile), UNET.title), "UNet",
                        str(ufile))
    rca_keys = [k for k in meta if RCA_MARK in k]
    unet_rca = _rca_set(rca_entries(ucfg, "unet"), read(rca_keys), str(ufile), "SeeSR UNet RCA blocks", dtype,
                        device, ops, attention)

    ccfg_json = read_config(c_dir)
    stock_config(ccfg_json, ControlNetModel, "ControlNet")
    cfile = _weights_file(c_dir)
    sd = load_state_dict(cfile)
    require(sd, CONTROLNET.id, source=str(cfile), folder=FOLDER)
    ccfg = merge_config(ccfg_json, infer_or_raise(infer_controlnet_config, sd, str(cfile), CONTROLNET.title),
                        "ControlNet", str(cfile))
    base, rca_sd = split_rca(sd)
    controlnet_rca = _rca_set(rca_entries(ccfg, "controlnet"), rca_sd, str(cfile), "SeeSR ControlNet RCA blocks",
                              dtype, device, ops, attention)
    ldm = to_ldm(base, ccfg, "controlnet")
    log.info("SeeSR native parts from %s: %d UNet RCA blocks, ControlNet %d tensors + %d RCA blocks", folder,
             len(unet_rca.entries), len(ldm), len(controlnet_rca.entries))
    return NativeParts(unet_rca, controlnet_rca, ldm, ucfg, ccfg, str(folder))
