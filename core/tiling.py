"""The one tiling toolkit of the pack: tile positions, visit order, blend weights, tiled application and the
out-of-memory back-off.

**The overlap rule (every family, every front end).** Tiles are ``min(tile, side)`` long (square tiles use the
shorter side); the overlap actually used is clamped to at most half of the tile actually used, so the stride is
never below ``tile / 2`` and the tile count stays ``≈ (2·side/tile)²`` at worst — an overlap ≥ the tile cannot
collapse the stride to one pixel. The clamp is logged once per call. The last tile of a row/column snaps to the
border.

Blend weights (``blend=``): ``gaussian`` (σ = side/4, centre-weighted), ``linear`` (ramps over the overlap, flat
inside) and ``seesr`` (SeeSR's official float64 Gaussian map, variance 0.01·t², with its off-centre y quirk).
Outputs are ``Σ w·tile / Σ w``, so a model that is pointwise inside its tiles gives exactly the untiled result,
and an input that fits in one tile is processed in a single call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from .errors import InputError
from .progress import Progress

log = logging.getLogger(__name__)

BLENDS = ("gaussian", "linear", "seesr")
ORDERS = ("rows", "columns")  # rows: y outer, x inner; columns: x outer, y inner (SeeSR's official order)
SEESR_VARIANCE = 0.01


def effective_overlap(tile: int, overlap: int) -> int:
    """The overlap used with a tile of side ``tile`` (the pack-wide rule: at most ``tile // 2``)."""
    return max(0, min(int(overlap), int(tile) // 2))


def tile_origins(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of side ``min(tile, length)`` covering ``[0, length)``; the last snaps to the end."""
    if tile <= 0:
        raise InputError(f"the tile must be positive, got {tile}")
    if length <= tile:
        return [0]
    stride = tile - effective_overlap(tile, overlap)
    n = 1 + math.ceil((length - tile) / stride)
    return [min(i * stride, length - tile) for i in range(n)]


@dataclass(frozen=True)
class Grid:
    """Tiles of ``th × tw`` at ``origins`` (in visit order) over an ``h × w`` plane."""

    h: int
    w: int
    th: int
    tw: int
    overlap: int
    origins: tuple[tuple[int, int], ...]

    def __len__(self) -> int:
        return len(self.origins)

    @property
    def whole(self) -> bool:
        return len(self.origins) == 1 and (self.th, self.tw) == (self.h, self.w)


def grid(h: int, w: int, tile: int | None, overlap: int = 0, order: str = "rows", square: bool = False) -> Grid:
    """The tiles covering an ``h × w`` plane. ``tile`` None/0 → one tile, the whole plane. ``square``: both
    sides ``min(tile, h, w)`` (SeeSR); else ``min(tile, h) × min(tile, w)``."""
    if order not in ORDERS:
        raise InputError(f"unknown tile order {order!r}; choose one of {ORDERS}")
    if not tile:
        return Grid(h, w, h, w, 0, ((0, 0),))
    if tile < 0 or overlap < 0:
        raise InputError(f"tile and overlap must not be negative, got tile {tile}, overlap {overlap}")
    th, tw = (min(tile, h, w),) * 2 if square else (min(tile, h), min(tile, w))
    used = effective_overlap(min(th, tw), overlap)
    if used != overlap and (th < h or tw < w):
        log.info("tile overlap %d clamped to %d (at most half of the %dx%d tile)", overlap, used, tw, th)
    ys, xs = tile_origins(h, th, used), tile_origins(w, tw, used)
    pts = [(y, x) for y in ys for x in xs] if order == "rows" else [(y, x) for x in xs for y in ys]
    return Grid(h, w, th, tw, used, tuple(pts))


def blend_window(h: int, w: int, blend: str = "gaussian", overlap: int = 0,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A ``[h, w]`` weight map, strictly positive (see the module docstring for the kinds)."""
    if blend == "seesr":
        if h != w:
            raise InputError(f"the seesr blend needs square tiles, got {w}x{h}")
        t = h
        v = torch.arange(t, dtype=torch.float64)

        def g(mid: float) -> torch.Tensor:
            return torch.exp(-(v - mid) ** 2 / (t * t) / (2 * SEESR_VARIANCE)) / math.sqrt(2 * math.pi * SEESR_VARIANCE)

        return torch.outer(g(t / 2), g((t - 1) / 2)).to(device=device, dtype=dtype)

    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64)
        if blend == "gaussian":
            c, s = (n - 1) / 2.0, max(n / 4.0, 1e-3)
            return torch.exp(-0.5 * ((i - c) / s) ** 2)
        if blend == "linear":
            ramp = max(int(overlap), 1)
            return torch.clamp(torch.minimum(i + 1, n - i) / (ramp + 1), max=1.0)
        raise InputError(f"unknown blend {blend!r}; choose one of {BLENDS}")

    win = axis(h)[:, None] * axis(w)[None, :]
    return win.clamp_min(1e-6).to(device=device, dtype=dtype)


def is_oom(exc: BaseException) -> bool:
    """Out of memory: ``torch.OutOfMemoryError``, or an accelerator error saying so (as ComfyUI's ``is_oom``)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    accel = getattr(torch, "AcceleratorError", None)
    return accel is not None and isinstance(exc, accel) and "out of memory" in str(exc).lower()


def retry_on_oom(run: Callable[[int | None], torch.Tensor], tile: int | None, full: int, min_tile: int = 64,
                 what: str = "tiles", memo: dict | None = None) -> torch.Tensor:
    """``run(tile)``; on out-of-memory halve the tile (starting from ``min(tile, full)``, ``full`` = the longest
    side of the input; never below ``min_tile``) and run again from the start; an out-of-memory at ``min_tile``
    or below surfaces. Other errors propagate at once. ``memo`` (a dict kept by a caller that runs many times,
    e.g. once per sampling step) remembers the tile that worked, so later calls start from it."""
    if memo is not None and "tile" in memo:
        tile = memo["tile"]
    while True:
        try:
            out = run(tile)
            if memo is not None:
                memo["tile"] = tile
            return out
        except Exception as exc:  # noqa: BLE001 - re-raised unless it is an OOM
            if not is_oom(exc):
                raise
            current = min(tile or full, full)
            if current <= min_tile:
                raise
            tile = max(min_tile, current // 2)
            log.warning("out of memory with %s of %d; retrying with %d", what, current, tile)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()


def blend_tiles(fn: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor], x: torch.Tensor, g: Grid,
                scale: float = 1.0, blend: str = "gaussian", progress: Progress | None = None) -> torch.Tensor:
    """``Σ w·fn(tile) / Σ w`` over the tiles of ``g`` (``fn(tile, (y, x))`` → the tile's output, ``scale`` × its
    size), accumulated in float32."""
    h, w = x.shape[-2:]
    out = weight = window = None
    for k, (y, x0) in enumerate(g.origins):
        part = fn(x[..., y:y + g.th, x0:x0 + g.tw], (y, x0))
        if out is None:
            oh, ow = round(h * scale), round(w * scale)
            out = torch.zeros((*part.shape[:-2], oh, ow), dtype=torch.float32, device=part.device)
            weight = torch.zeros((oh, ow), dtype=torch.float32, device=part.device)
        ph, pw = part.shape[-2:]
        if window is None or window.shape != (ph, pw):
            window = blend_window(ph, pw, blend, round(g.overlap * scale), device=part.device)
        oy, ox = round(y * scale), round(x0 * scale)
        out[..., oy:oy + ph, ox:ox + pw] += part.float() * window
        weight[oy:oy + ph, ox:ox + pw] += window
        if progress is not None:
            progress(k + 1, len(g))
    return out / weight


def tiled_apply(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int | None, overlap: int = 32,
                scale: float = 1.0, blend: str = "gaussian", progress: Progress | None = None,
                min_tile: int = 64, memo: dict | None = None) -> torch.Tensor:
    """Apply ``fn`` (``[B,C,h,w]`` → ``[B,C',h*scale,w*scale]``) tile by tile over ``x``, with the
    out-of-memory back-off of :func:`retry_on_oom` (``memo``: see there).

    ``tile=None`` or 0, or an image that fits in one tile, calls ``fn(x)`` once. ``progress(done, total)`` is
    called after each tile.
    """
    if blend not in BLENDS:
        raise InputError(f"unknown blend {blend!r}; choose one of {BLENDS}")
    h, w = x.shape[-2:]

    def run(t: int | None) -> torch.Tensor:
        g = grid(h, w, t, overlap)
        if len(g) == 1:
            out = fn(x)
            if progress is not None:
                progress(1, 1)
            return out
        return blend_tiles(lambda part, _pos: fn(part), x, g, scale, blend, progress).to(x.dtype)

    return retry_on_oom(run, tile, max(h, w), min_tile, memo=memo)


def count_tiles(h: int, w: int, tile: int | None, overlap: int = 0) -> int:
    """How many tiles :func:`tiled_apply` visits for an ``h × w`` input (for progress totals)."""
    return len(grid(h, w, tile, overlap))
