"""SeeSR's latent tiling of the denoising loop: tile origins and Gaussian blending weights.

Rules of the official ``pipeline_seesr.py`` (re-stated, not copied): tiling happens only when ``h·w > tile²``; the
tile is square with side ``t = min(tile, h, w)``; tiles step by ``t − overlap`` and the last one snaps to the edge;
visit order is x-outer, y-inner; the noise predictions are blended with one Gaussian map ``G`` (float64) before CFG.
``G``'s x centre is ``(t−1)/2`` but its y centre is ``t/2`` (an official quirk, kept for parity).
"""

from __future__ import annotations

import math

import torch

OFFICIAL_TILE = 96      # test_seesr.py --latent_tiled_size (latent pixels; 768 image pixels)
OFFICIAL_OVERLAP = 4    # test_seesr.py --latent_tiled_overlap
DEFAULT_TILE = 96
DEFAULT_OVERLAP = 32    # a third of the tile: the Gaussian ramps overlap far enough to hide the seams
_VAR = 0.01


def needs_tiling(h: int, w: int, tile: int | None) -> bool:
    return bool(tile) and h * w > tile * tile


def _positions(length: int, t: int, overlap: int) -> list[int]:
    step = t - overlap
    if step <= 0:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {t}")
    n = 1 if length <= t else 1 + math.ceil((length - t) / step)
    return [i * step if i < n - 1 else length - t for i in range(n)]


def tile_origins(h: int, w: int, tile: int, overlap: int) -> tuple[int, list[tuple[int, int]]]:
    """``(t, [(y, x), ...])`` in the official visit order (x outer, y inner); one ``(0, 0)`` when untiled."""
    if not needs_tiling(h, w, tile):
        return 0, [(0, 0)]
    t = min(tile, h, w)
    ys, xs = _positions(h, t, overlap), _positions(w, t, overlap)
    return t, [(y, x) for x in xs for y in ys]


def gaussian_weights(t: int) -> torch.Tensor:
    """The official ``t×t`` float64 Gaussian map: g(x; (t−1)/2)·g(y; t/2), g(v; m) = exp(−(v−m)²/(2·0.01·t²))/√(2π·0.01)."""
    v = torch.arange(t, dtype=torch.float64)

    def g(mid: float) -> torch.Tensor:
        return torch.exp(-(v - mid) ** 2 / (t * t) / (2 * _VAR)) / math.sqrt(2 * math.pi * _VAR)

    return torch.outer(g(t / 2), g((t - 1) / 2))
