"""The DAPE/RAM image embeddings passed between nodes (SeeSR's "soft prompt")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import InputError


@dataclass(frozen=True)
class DapeEmbeds:
    """Per-image RAM/DAPE representation embeddings ``[B, 145, 512]``.

    Token 0 is ``image_proj`` of the average-pooled Swin token, tokens 1..144 are ``image_proj`` of the 12×12 Swin
    grid (row-major). With DAPE merged this is what SeeSR's image cross-attention (RCA) layers attend to.
    ``tags`` holds the per-image tag strings computed together with the embeddings (empty when unknown).
    """

    embeds: torch.Tensor
    tags: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        t = self.embeds
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise InputError(f"DapeEmbeds.embeds must be a [B, N, D] tensor, got "
                             f"{getattr(t, 'shape', type(t).__name__)}")
        if self.tags and len(self.tags) != t.shape[0]:
            raise InputError(f"DapeEmbeds: {len(self.tags)} tag strings for {t.shape[0]} images")

    @property
    def tokens(self) -> int:
        return int(self.embeds.shape[1])

    @property
    def dim(self) -> int:
        return int(self.embeds.shape[2])

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def to(self, *args: Any, **kwargs: Any) -> DapeEmbeds:
        """Move/cast the embeddings (same arguments as ``torch.Tensor.to``)."""
        return DapeEmbeds(self.embeds.to(*args, **kwargs), self.tags)

    def select(self, i: int | slice) -> DapeEmbeds:
        """The embeddings of image ``i`` (kept 3-D: ``[1, N, D]``), or of a slice of the batch."""
        if isinstance(i, slice):
            return DapeEmbeds(self.embeds[i], self.tags[i] if self.tags else ())
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"DapeEmbeds: index {i} out of range for {n} image(s)")
        i = i % n
        return DapeEmbeds(self.embeds[i:i + 1], (self.tags[i],) if self.tags else ())
