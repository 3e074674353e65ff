"""IR-SDE universal restoration of DA-CLIP: the ConditionalUNet noise predictor, the IR-SDE and the sampler.

``load_irsde(path_or_state_dict)`` builds the network (universal-ir or wild-ir, every hyper-parameter read from
the tensor shapes) and loads it strictly; ``restore(network, daclip, images, ...)`` runs the reverse process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from .. import registry
from ..errors import ConfigError, ContextMismatchError
from .arch import ARCH, FOLDER
from .restore import SAMPLERS, check_context, embeddings, pairing_hint, restore, restore_one
from .sde import IRSDE
from .unet import ConditionalUNet, UNetConfig, build_irsde, infer_config

__all__ = [
    "ARCH", "IRSDE", "SAMPLERS", "ConditionalUNet", "ContextMismatchError", "ConfigError", "UNetConfig",
    "build_irsde", "check_context", "embeddings", "infer_config", "load_irsde", "pairing_hint", "restore",
    "restore_one",
]


def load_irsde(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor],
               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> ConditionalUNet:
    """Load an IR-SDE network (``universal-ir.pth``, ``wild-ir.pth`` or a converted safetensors) strictly.

    Raises ``WrongModelError`` (naming IR-SDE and the ``models/irsde`` folder) for files of another family.
    """
    return registry.load(path_or_state_dict, ARCH.id, dtype=dtype, device=device, folder=FOLDER).model
