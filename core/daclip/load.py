"""Loading the official DA-CLIP checkpoints (and converting them to a compact safetensors file).

The released ``daclip_ViT-B-32.pt`` / ``wild-daclip_ViT-L-14.pt`` are open_clip training checkpoints: a
``state_dict`` wrapper next to the optimizer state (with numpy scalars), and the full ``DaCLIP.state_dict()``
including ``visual.*`` aliases of ``clip.visual.*``. ``core.checkpoint.load_state_dict`` reads them with
``weights_only=True`` and an explicit allow-list; the architecture entry (:mod:`.arch`) keeps the inference
weights (``clip.*``, ``visual_control.*``, ``logit_scale``) and loads them strictly into a model built from
their shapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .. import registry
from ..checkpoint import load_state_dict, save_safetensors
from .arch import ARCH, FOLDER, keep
from .config import infer_config
from .model import DaCLIP

log = logging.getLogger(__name__)

def inference_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep ``clip.*``, ``visual_control.*`` and ``logit_scale``; drop the ``visual.*`` aliases (and anything
    else a training checkpoint carries)."""
    return {k: v for k, v in sd.items() if keep(k)}


def load_daclip(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DaCLIP:
    """Build DA-CLIP from a checkpoint file (``.pt`` training checkpoint or ``.safetensors``) or a state dict,
    with every hyper-parameter inferred from the tensor shapes, and load it strictly (eval mode, frozen)."""
    desc = registry.load(path_or_state_dict, ARCH.id, dtype=dtype, device=device, folder=FOLDER)
    log.info("DA-CLIP %s loaded from %s (%s, %s)", desc.config.name, desc.source, device, dtype)
    return desc.model


def convert(src: str | os.PathLike | Mapping[str, torch.Tensor], dst: str | os.PathLike,
            dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the inference weights of a DA-CLIP checkpoint as safetensors (fp16 by default); the metadata holds
    the family and the inferred config (``daclip_config``)."""
    source = "<state dict>" if isinstance(src, Mapping) else str(src)
    sd = load_state_dict(src)
    registry.require(sd, ARCH.id, source=source, folder=FOLDER)
    sd = inference_state_dict(sd)
    config = infer_config(sd)
    meta = {"family": ARCH.id, "daclip_config": config.to_json(), "source": Path(source).name}
    return save_safetensors(sd, dst, metadata=meta, dtype=dtype)
