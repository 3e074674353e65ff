"""Loading and saving SSEN checkpoints (safetensors with a JSON config in the metadata)."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .. import registry
from ..checkpoint import read_metadata, save_safetensors
from .arch import ARCH, FOLDER
from .model import SSENet

SHIPPED_WEIGHTS = "ssen_small.safetensors"


def shipped_weights() -> Path:
    """Path of the model shipped inside the package."""
    return Path(__file__).resolve().parent / "weights" / SHIPPED_WEIGHTS


def load_ssen(path_or_state_dict: str | os.PathLike | Mapping[str, torch.Tensor] | None = None) -> SSENet:
    """An eval-mode SSEN built from a checkpoint file or state dict (hyper-parameters from tensor shapes,
    ``strict=True``). ``None`` loads the shipped small model."""
    src = shipped_weights() if path_or_state_dict is None else path_or_state_dict
    return registry.load(src, ARCH.id, folder=FOLDER).model


def save_ssen(model: SSENet, path: str | os.PathLike, note: Mapping[str, str] | None = None) -> Path:
    meta = {"config": json.dumps(model.config.to_json()), "family": "ssen"}
    meta.update(note or {})
    return save_safetensors(model.state_dict(), path, metadata=meta)


def build_from_state_dict(sd: Mapping[str, torch.Tensor]) -> SSENet:
    """An eval-mode SSEN with the hyper-parameters of ``sd``, loaded strictly."""
    return ARCH.load(sd).model


def read_note(path: str | os.PathLike) -> dict[str, str]:
    """The metadata stored with a checkpoint (training source, steps, validation figures)."""
    return read_metadata(path)
