"""DA-CLIP embeddings passed between nodes and into IR-SDE restoration."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..payloads import PerImage


@dataclass(frozen=True)
class DaclipEmbeds(PerImage):
    """Per-image DA-CLIP embeddings (unnormalised, as the official ``encode_image`` returns them).

    ``clean``: the controlled main-tower image features ``[B, D]``; ``degradation``: the controller's pooled
    features (or a text embedding chosen by the user) ``[B, D]``. ``B`` may be 1 for "same for every image".
    ``len``, ``select(i)`` (``[1, D]``) and ``to(...)`` come from :class:`..payloads.PerImage`.
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
