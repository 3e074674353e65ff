"""Shape inference helpers shared by every family's ``infer_config`` (spandrel-style: hyper-parameters are read
from tensor names and shapes, never from a config file the checkpoint may lack)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import torch

from .errors import ConfigError


def key_set(sd: Mapping[str, torch.Tensor] | Iterable[str]) -> frozenset[str]:
    return frozenset(sd.keys() if isinstance(sd, Mapping) else sd)


def has_prefix(keys: Iterable[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def indices(keys: Iterable[str], prefix: str) -> list[int]:
    """Sorted distinct integers ``N`` of the keys ``<prefix>N.…``."""
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    return sorted({int(m.group(1)) for k in keys if (m := pat.match(k))})


def count_blocks(keys: Iterable[str], prefix: str, what: str | None = None) -> int:
    """How many blocks ``<prefix>0.``, ``<prefix>1.``, … there are; they must be numbered 0..N-1."""
    idx = indices(keys, prefix)
    if idx and idx != list(range(len(idx))):
        raise ConfigError(f"{what or 'blocks'} under '{prefix}' are not numbered 0..N-1: {idx}")
    return len(idx)


def shape(sd: Mapping[str, torch.Tensor], key: str, ndim: int | None = None, family: str = "model"
          ) -> tuple[int, ...]:
    """The shape of ``sd[key]``; a clear error when the tensor is missing or has another rank."""
    if key not in sd:
        raise ConfigError(f"not a {family} state dict: the tensor '{key}' is missing")
    s = tuple(int(d) for d in sd[key].shape)
    if ndim is not None and len(s) != ndim:
        raise ConfigError(f"{family}: '{key}' has shape {list(s)}; expected {ndim} dimensions")
    return s


def dim(sd: Mapping[str, torch.Tensor], key: str, axis: int = 0, family: str = "model") -> int:
    """One dimension of ``sd[key]``."""
    s = shape(sd, key, None, family)
    if len(s) <= axis:
        raise ConfigError(f"{family}: '{key}' has shape {list(s)}; no dimension {axis}")
    return s[axis]
