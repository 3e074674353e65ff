"""IR-SDE universal restoration of DA-CLIP: the ConditionalUNet noise predictor, the IR-SDE and the sampler.

``load_irsde(path_or_state_dict)`` builds the network (universal-ir or wild-ir, every hyper-parameter read from
the tensor shapes) and loads it strictly; ``restore(network, daclip, images, ...)`` runs the reverse process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from ..checkpoint import load_state_dict
from ..registry import require_family
from .restore import SAMPLERS, ContextMismatchError, check_context, embeddings, pairing_hint, restore, restore_one
from .sde import IRSDE
from .unet import ConditionalUNet, IRSDEConfigError, UNetConfig, infer_config

__all__ = [
    "IRSDE", "SAMPLERS", "ConditionalUNet", "ContextMismatchError", "IRSDEConfigError", "UNetConfig",
    "build_irsde", "check_context", "embeddings", "infer_config", "load_irsde", "pairing_hint", "restore",
    "restore_one",
]


def build_irsde(config: UNetConfig, device: torch.device | str | None = None) -> ConditionalUNet:
    """An uninitialised network for ``config`` (``device="meta"`` allocates nothing)."""
    with torch.device(device or "cpu"):
        return ConditionalUNet(config)


def load_irsde(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ConditionalUNet:
    """Load an IR-SDE network (``universal-ir.pth``, ``wild-ir.pth`` or a converted safetensors) strictly.

    Raises ``WrongModelError`` (naming IR-SDE and the ``models/irsde`` folder) for files of another family.
    """
    source = "<state dict>" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    sd = load_state_dict(path_or_state_dict)
    require_family(sd, "irsde", source=source)
    config = infer_config(sd)
    meta = all(v.is_meta for v in sd.values())
    net = build_irsde(config, "meta")
    try:
        net.load_state_dict(sd, strict=True, assign=True)
    except RuntimeError as exc:
        raise IRSDEConfigError(f"'{source}' does not match the IR-SDE network inferred from its shapes "
                               f"({config}): {exc}") from None
    if not meta:
        net = net.to(device=device, dtype=dtype)
    return net.eval().requires_grad_(False)
