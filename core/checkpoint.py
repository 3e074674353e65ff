"""Safe checkpoint loading and saving.

* ``.safetensors`` files are memory-mapped (``safetensors.torch.load_file`` maps the file).
* Everything else is treated as a torch pickle and loaded with ``torch.load(weights_only=True, mmap=True)``
  under an explicit, minimal allow-list of extra globals (the official DA-CLIP training checkpoint stores
  numpy scalars in its optimizer state). Nothing outside the allow-list is ever unpickled, so a malicious
  file whose ``__reduce__`` runs a command is refused before anything runs.
* Common training wrappers are unwrapped: ``state_dict`` / ``model`` / ``params_ema`` / ``params`` /
  ``module`` and a ``module.`` (DDP) key prefix.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
PathLike = str | os.PathLike

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

# Wrapper keys seen in released checkpoints, tried in this order.
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "module", "net", "network")


__all__ = ["CheckpointError", "MODEL_SUFFIXES", "load_state_dict", "meta_state_dict_from_key_list", "read_metadata",
           "save_safetensors", "unwrap_state_dict"]


def _numpy_allow_list() -> list[Any]:
    """Extra globals allowed in pickles: numpy scalars/dtypes (optimizer state of open_clip checkpoints)
    and ``_codecs.encode`` (used by numpy scalar pickles). Nothing that can run code."""
    import codecs

    allowed: list[Any] = [codecs.encode]
    try:
        import numpy as np
    except ImportError:  # numpy is a hard dependency, but stay robust
        return allowed
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    # The official DA-CLIP file was written by numpy 1.x, which names the function numpy.core.multiarray.scalar.
    allowed += [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    allowed.append(np.dtype)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
            cls = getattr(dtypes, name, None)
            if cls is not None:
                allowed.append(cls)
    return allowed


def _load_pickle(path: Path) -> Any:
    mmap = zipfile.is_zipfile(path)  # mmap works only for the zip format (torch >= 1.6 files)
    try:
        with torch.serialization.safe_globals(_numpy_allow_list()):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"Refused to load '{path}': it is a pickle that needs globals outside the safe allow-list "
            f"({str(exc).splitlines()[0]}). Only weights are loaded from pickles; convert trusted files to "
            f".safetensors with `aware-restore convert`."
        ) from exc
    except RuntimeError as exc:
        raise CheckpointError(f"Could not read '{path}' as a torch checkpoint: {exc}") from exc


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"Could not read '{path}' as safetensors: {exc}") from exc


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, source: str = "<state dict>") -> StateDict:
    """Return the tensor dict inside a training checkpoint, with ``module.`` prefixes removed."""
    seen = 0
    while not _is_tensor_dict(obj):
        if not isinstance(obj, Mapping) or seen > 4:
            raise CheckpointError(f"'{source}' holds no tensor state dict (found {type(obj).__name__}).")
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and all(isinstance(k, str) for k in tensors):
                obj = tensors  # e.g. a dict mixing tensors with scalar metadata
                break
            raise CheckpointError(
                f"'{source}' holds no tensor state dict; top-level keys: {sorted(map(str, obj))[:8]}"
            )
        obj = inner
        seen += 1
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict(path_or_sd: PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    """Load a state dict safely from a file (or pass a mapping through ``unwrap_state_dict``)."""
    if isinstance(path_or_sd, Mapping):
        return unwrap_state_dict(path_or_sd)
    path = Path(path_or_sd)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: '{path}'")
    if path.suffix.lower() in SAFETENSORS_SUFFIXES:
        return unwrap_state_dict(_load_safetensors(path), str(path))
    return unwrap_state_dict(_load_pickle(path), str(path))


def read_metadata(path: PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} for other files)."""
    path = Path(path)
    if path.suffix.lower() not in SAFETENSORS_SUFFIXES:
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def save_safetensors(sd: Mapping[str, torch.Tensor], path: PathLike, metadata: Mapping[str, Any] | None = None,
                     dtype: torch.dtype | None = None) -> Path:
    """Write ``sd`` as safetensors: tensors made contiguous and unshared, floats optionally cast to ``dtype``.
    Non-string metadata values are JSON-encoded."""
    from safetensors.torch import save_file

    out: StateDict = {}
    for k, v in sd.items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous().clone()
    meta = {"format": "pt"}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    return path



def meta_state_dict_from_key_list(path: PathLike, dtype: torch.dtype = torch.float32) -> StateDict:
    """Build a meta-device state dict from a ``key<TAB>[shape]`` listing (the real-size key lists)."""
    sd: StateDict = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")
        sd[key] = torch.empty(json.loads(shape), dtype=dtype, device="meta")
    return sd
