"""The DAPE/RAM image embeddings passed between nodes (SeeSR's "soft prompt")."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..payloads import PerImage


@dataclass(frozen=True)
class DapeEmbeds(PerImage):
    """Per-image RAM/DAPE representation embeddings ``[B, 145, 512]``.

    Token 0 is ``image_proj`` of the average-pooled Swin token, tokens 1..144 are ``image_proj`` of the 12×12 Swin
    grid (row-major). With DAPE merged this is what SeeSR's image cross-attention (RCA) layers attend to.
    ``tags`` holds the per-image tag strings computed together with the embeddings (empty when unknown).
    ``len``, ``select(i)`` (``[1, N, D]`` and its tag) and ``to(...)`` come from :class:`..payloads.PerImage`.
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
