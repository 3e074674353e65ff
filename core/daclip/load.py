"""Loading the official DA-CLIP checkpoints (and converting them to a compact safetensors file).

The released ``daclip_ViT-B-32.pt`` / ``wild-daclip_ViT-L-14.pt`` are open_clip training checkpoints: a
``state_dict`` wrapper next to the optimizer state (with numpy scalars), and the full ``DaCLIP.state_dict()``
including ``visual.*`` aliases of ``clip.visual.*``. ``core.checkpoint.load_state_dict`` reads them with
``weights_only=True`` and an explicit allow-list; here the inference weights are kept (``clip.*``,
``visual_control.*``, ``logit_scale``), upcast, and loaded strictly into a model built from their shapes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import load_state_dict, save_safetensors
from ..registry import require_family
from .config import DaclipConfigError, infer_config
from .model import DaCLIP, build_daclip

log = logging.getLogger(__name__)

FAMILY = "daclip"
FOLDER = "daclip"


class DaclipLoadError(ValueError):
    """A DA-CLIP state dict could not be loaded into the model built from its shapes."""


def is_inference_key(key: str) -> bool:
    return key == "logit_scale" or key.startswith(("clip.", "visual_control."))


def inference_state_dict(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep ``clip.*``, ``visual_control.*`` and ``logit_scale``; drop the ``visual.*`` aliases (and anything
    else a training checkpoint carries)."""
    return {k: v for k, v in sd.items() if is_inference_key(k)}


def _read(path_or_sd: str | os.PathLike | Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], str]:
    source = "<state dict>" if isinstance(path_or_sd, Mapping) else str(path_or_sd)
    sd = load_state_dict(path_or_sd)
    require_family(sd, FAMILY, source=source, folder=FOLDER)
    return inference_state_dict(sd), source


def load_daclip(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
                device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32) -> DaCLIP:
    """Build DA-CLIP from a checkpoint file (``.pt`` training checkpoint or ``.safetensors``) or a state dict,
    with every hyper-parameter inferred from the tensor shapes, and load it strictly (eval mode, frozen)."""
    sd, source = _read(path_or_state_dict)
    try:
        config = infer_config(sd)
    except DaclipConfigError as exc:
        raise DaclipLoadError(f"'{source}': {exc}") from exc
    model = build_daclip(config, device="meta")
    device = torch.device(device)
    # copy=True: fresh, aligned tensors that never alias the caller's dict or a memory-mapped file
    weights = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype, copy=True)
               for k, v in sd.items()}
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[:6]
        raise DaclipLoadError(f"'{source}' does not fit the DA-CLIP model inferred from its shapes "
                              f"({config.name}): " + " ".join(line.strip() for line in first)) from exc
    model.reset_buffers()
    model.eval().requires_grad_(False)
    log.info("DA-CLIP %s loaded from %s (%d tensors, %s, %s)", config.name, source, len(weights), device, dtype)
    return model


def convert(src: str | os.PathLike | Mapping[str, torch.Tensor], dst: str | os.PathLike,
            dtype: torch.dtype | None = torch.float16) -> Path:
    """Write the inference weights of a DA-CLIP checkpoint as safetensors (fp16 by default); the metadata holds
    the family and the inferred config (``daclip_config``)."""
    sd, source = _read(src)
    config = infer_config(sd)
    meta = {"family": FAMILY, "daclip_config": config.to_json(), "source": Path(source).name}
    return save_safetensors(sd, dst, metadata=meta, dtype=dtype)
