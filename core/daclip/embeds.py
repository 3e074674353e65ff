"""DA-CLIP embeddings passed between nodes and into IR-SDE restoration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


@dataclass(frozen=True)
class DaclipEmbeds:
    """Per-image DA-CLIP embeddings (unnormalised, as the official ``encode_image`` returns them).

    ``clean``: the controlled main-tower image features ``[B, D]``; ``degradation``: the controller's pooled
    features (or a text embedding chosen by the user) ``[B, D]``. ``B`` may be 1 for "same for every image".
    """

    clean: torch.Tensor
    degradation: torch.Tensor

    def __post_init__(self) -> None:
        for name in ("clean", "degradation"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.ndim != 2:
                raise InputError(f"DaclipEmbeds.{name} must be a [B, D] tensor, got "
                                 f"{getattr(t, 'shape', type(t).__name__)}")
        if self.clean.shape != self.degradation.shape:
            raise InputError(f"DaclipEmbeds: clean {tuple(self.clean.shape)} and degradation "
                             f"{tuple(self.degradation.shape)} must have the same shape")

    @property
    def dim(self) -> int:
        return int(self.clean.shape[1])

    def __len__(self) -> int:
        return int(self.clean.shape[0])

    def to(self, *args: Any, **kwargs: Any) -> DaclipEmbeds:
        """Move/cast both tensors (same arguments as ``torch.Tensor.to``)."""
        return DaclipEmbeds(self.clean.to(*args, **kwargs), self.degradation.to(*args, **kwargs))

    def select(self, i: int | slice) -> DaclipEmbeds:
        """The embeddings of image ``i`` (kept 2-D: ``[1, D]``), or of a slice of the batch."""
        if isinstance(i, slice):
            return DaclipEmbeds(self.clean[i], self.degradation[i])
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"DaclipEmbeds: index {i} out of range for {n} image(s)")
        return DaclipEmbeds(self.clean[i:i + 1], self.degradation[i:i + 1])
