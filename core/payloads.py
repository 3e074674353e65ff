"""What every per-image payload shares (DA-CLIP and DAPE embeddings): tensor fields with the batch on axis 0 and
tuple fields with one entry per image (or empty), so ``len``, ``select`` and ``to`` are written once."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

import torch

P = TypeVar("P", bound="PerImage")


class PerImage:
    """Mixin for frozen dataclass payloads of per-image tensors (batch first)."""

    def _batched(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)  # type: ignore[arg-type]
                if isinstance(getattr(self, f.name), torch.Tensor) or getattr(self, f.name)}

    def __len__(self) -> int:
        return int(next(v for v in self._batched().values() if isinstance(v, torch.Tensor)).shape[0])

    def to(self: P, *args: Any, **kwargs: Any) -> P:
        """Move/cast every tensor (same arguments as ``torch.Tensor.to``)."""
        moved = {k: v.to(*args, **kwargs) for k, v in self._batched().items() if isinstance(v, torch.Tensor)}
        return dataclasses.replace(self, **moved)  # type: ignore[type-var]

    def select(self: P, i: int | slice) -> P:
        """The payload of image ``i`` (its batch axis kept: length 1), or of a slice of the batch."""
        if not isinstance(i, slice):
            n = len(self)
            if not -n <= i < n:
                raise IndexError(f"{type(self).__name__}: index {i} out of range for {n} image(s)")
            i = slice(i % n, i % n + 1)
        return dataclasses.replace(self, **{k: v[i] for k, v in self._batched().items()})  # type: ignore[type-var]
