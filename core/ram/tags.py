"""RAM's tag list and per-class thresholds (package data, Apache-2.0, OPPO) and the tag-selection rule."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

import torch

from ..errors import InputError

DATA = Path(__file__).resolve().parent / "data"
TAG_LIST = DATA / "ram_tag_list.txt"
THRESHOLDS = DATA / "ram_tag_list_threshold.txt"
SEPARATOR = ", "  # SeeSR's join; the original RAM joins with " | "


@lru_cache(maxsize=1)
def tag_list() -> tuple[str, ...]:
    """The 4585 English tags, in class order."""
    return tuple(TAG_LIST.read_text(encoding="utf-8").splitlines())


@lru_cache(maxsize=1)
def _thresholds() -> tuple[float, ...]:
    return tuple(float(v) for v in THRESHOLDS.read_text(encoding="utf-8").split())


def thresholds() -> torch.Tensor:
    """Per-class thresholds [4585] float32 (a tag passes when its probability is strictly greater)."""
    return torch.tensor(_thresholds(), dtype=torch.float32, device="cpu")


def normalise_exclude(exclude: str | Iterable[str] | None) -> frozenset[str]:
    """Tags to drop, from a comma/newline separated string or an iterable; compared case-insensitively."""
    if exclude is None:
        return frozenset()
    if isinstance(exclude, str):
        exclude = exclude.replace("\n", ",").split(",")
    return frozenset(t.strip().lower() for t in exclude if t and t.strip())


def select(probs: torch.Tensor, thr: torch.Tensor, names: Sequence[str], threshold: float | None = None,
           exclude: str | Iterable[str] | None = (), max_tags: int | None = None) -> list[list[int]]:
    """Indices of the selected classes per image, in tag-list order.

    ``probs`` [B, C]; a class passes when ``prob > thr`` (``threshold`` replaces every per-class threshold);
    excluded tags are dropped; ``max_tags`` keeps the most probable ones (ties broken by class order).
    """
    if probs.ndim != 2 or probs.shape[1] != len(names):
        raise InputError(f"probabilities {tuple(probs.shape)} do not match {len(names)} tags")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise InputError(f"threshold must be in [0, 1], got {threshold}")
    if max_tags is not None and max_tags < 0:
        raise InputError(f"max_tags must be >= 0, got {max_tags}")
    probs = probs.detach().float().cpu()
    limit = torch.full_like(probs[0], float(threshold)) if threshold is not None else thr.float().cpu()
    drop = normalise_exclude(exclude)
    out: list[list[int]] = []
    for row in probs:
        idx = [i for i in torch.nonzero(row > limit).flatten().tolist() if names[i].lower() not in drop]
        if max_tags is not None and len(idx) > max_tags:
            keep = sorted(idx, key=lambda i: (-float(row[i]), i))[:max_tags]
            idx = sorted(keep)
        out.append(idx)
    return out


def join(indices: Sequence[int], names: Sequence[str]) -> str:
    return SEPARATOR.join(names[i] for i in indices)
