"""Overlapped tiled processing with blended seams.

``tiled_apply(fn, x, tile, overlap, scale)`` runs ``fn`` on overlapping tiles of ``x`` and blends the outputs
with strictly positive weights normalised by their sum, so for a model that is pointwise inside its tiles the
result is exactly the untiled one, and an image that fits in one tile is processed in a single call. On
out-of-memory the tile is halved and the work restarted (down to ``min_tile``); other errors propagate.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import torch

from .progress import Progress

log = logging.getLogger(__name__)

BLENDS = ("gaussian", "linear")


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles covering ``[0, length)``; the last tile snaps to ``length - tile``."""
    if tile <= 0:
        raise ValueError("tile must be positive")
    if length <= tile:
        return [0]
    overlap = min(max(overlap, 0), tile - 1)
    stride = tile - overlap
    n = 1 + math.ceil((length - tile) / stride)
    return [min(i * stride, length - tile) for i in range(n)]


def tile_grid(h: int, w: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(y, x) origins in row-major order."""
    return [(y, x) for y in tile_origins(h, tile, overlap) for x in tile_origins(w, tile, overlap)]


def blend_window(h: int, w: int, blend: str = "gaussian", overlap: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A ``[h, w]`` weight map, strictly positive. ``gaussian``: sigma = side/4 (centre-weighted);
    ``linear``: ramps over ``overlap`` pixels at every border (flat in the middle)."""
    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        if blend == "gaussian":
            c, s = (n - 1) / 2.0, max(n / 4.0, 1e-3)
            return torch.exp(-0.5 * ((i - c) / s) ** 2)
        if blend == "linear":
            ramp = max(int(overlap), 1)
            return torch.clamp(torch.minimum(i + 1, n - i) / (ramp + 1), max=1.0)
        raise ValueError(f"unknown blend {blend!r}; choose one of {BLENDS}")

    win = axis(h)[:, None] * axis(w)[None, :]
    return win.clamp_min(1e-6).to(device=device, dtype=dtype)


def _run(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int, scale: float,
         blend: str, progress: Progress | None) -> torch.Tensor:
    h, w = x.shape[-2:]
    grid = tile_grid(h, w, tile, overlap)
    out = weight = None
    window = None
    for k, (y, x0) in enumerate(grid):
        th, tw = min(tile, h), min(tile, w)
        part = fn(x[..., y:y + th, x0:x0 + tw])
        if out is None:
            oh, ow = round(h * scale), round(w * scale)
            out = torch.zeros((*part.shape[:-2], oh, ow), dtype=torch.float32, device=part.device)
            weight = torch.zeros((oh, ow), dtype=torch.float32, device=part.device)
        ph, pw = part.shape[-2:]
        if window is None or window.shape != (ph, pw):
            window = blend_window(ph, pw, blend, round(overlap * scale), device=part.device)
        oy, ox = round(y * scale), round(x0 * scale)
        out[..., oy:oy + ph, ox:ox + pw] += part.float() * window
        weight[oy:oy + ph, ox:ox + pw] += window
        if progress is not None:
            progress(k + 1, len(grid))
    return (out / weight).to(x.dtype)


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, overlap: int = 32,
                scale: float = 1.0, blend: str = "gaussian", progress: Progress | None = None,
                min_tile: int = 64) -> torch.Tensor:
    """Apply ``fn`` (``[B,C,h,w]`` → ``[B,C',h*scale,w*scale]``) tile by tile over ``x``.

    ``tile=None`` or 0, or an image that fits in one tile, calls ``fn(x)`` once. Tiles are square with side
    ``min(tile, H, W)``. ``progress(done, total)`` is called after each tile.
    """
    if blend not in BLENDS:
        raise ValueError(f"unknown blend {blend!r}; choose one of {BLENDS}")
    h, w = x.shape[-2:]
    while True:
        try:
            if not tile or (h <= tile and w <= tile):
                out = fn(x)
                if progress is not None:
                    progress(1, 1)
                return out
            return _run(fn, x, tile, overlap, scale, blend, progress)
        except torch.OutOfMemoryError:
            if not tile or min(tile, max(h, w)) // 2 < min_tile:
                raise
            tile = min(tile, max(h, w)) // 2
            overlap = min(overlap, tile // 4)
            log.warning("out of memory while tiling; retrying with tile %d (overlap %d)", tile, overlap)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
