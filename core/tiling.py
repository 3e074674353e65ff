"""The one tiling toolkit of the pack: tile positions, visit order, blend weights, tiles grouped into batches,
multi-output blending, tiled application and the out-of-memory back-off. Families choose parameters (SeeSR's in
:mod:`.seesr.tiles`); the loops live here.

**The overlap rule (every family, every front end).** Tiles are ``min(tile, side)`` long (square tiles use the
shorter side); the overlap actually used is clamped to at most half of the tile actually used, so the stride is
never below ``tile / 2`` and the tile count stays ``≈ (2·side/tile)²`` at worst — an overlap ≥ the tile cannot
collapse the stride to one pixel. The clamp is logged once per call. The last tile of a row/column snaps to the
border.

Blend weights (``blend=``): ``gaussian`` (σ = side/4, centre-weighted), ``linear`` (ramps over the overlap, flat
inside) and ``seesr`` (SeeSR's official float64 Gaussian map, variance 0.01·t², with its off-centre y quirk).
Weight maps are computed in float64 on the host and cast once to float32 on the compute device. Outputs are
``Σ w·tile / Σ w`` accumulated in float32, so a model that is pointwise inside its tiles gives exactly the untiled
result, and an input that fits in one tile is processed in a single call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
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
    """A ``[h, w]`` weight map, strictly positive (see the module docstring for the kinds).

    The map is computed in float64 on the host and cast once to ``dtype`` on ``device``: accelerators get no
    float64 tensor (MPS has none; CUDA would promote every product with it to float64)."""
    if blend == "seesr":
        if h != w:
            raise InputError(f"the seesr blend needs square tiles, got {w}x{h}")
        t = h
        v = torch.arange(t, dtype=torch.float64, device="cpu")

        def g(mid: float) -> torch.Tensor:
            return torch.exp(-(v - mid) ** 2 / (t * t) / (2 * SEESR_VARIANCE)) / math.sqrt(2 * math.pi * SEESR_VARIANCE)

        return torch.outer(g(t / 2), g((t - 1) / 2)).to(device=device, dtype=dtype)

    def axis(n: int) -> torch.Tensor:
        i = torch.arange(n, dtype=torch.float64, device="cpu")
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


def tile_groups(g: Grid, group: int = 1) -> list[list[tuple[int, int]]]:
    """The tile origins of ``g`` in visit order, ``group`` at a time (tiles batched into one network call)."""
    if group < 1:
        raise ValueError(f"group must be >= 1, got {group}")
    origins = list(g.origins)
    return [origins[i:i + group] for i in range(0, len(origins), group)]


TileOutputs = torch.Tensor | Sequence[torch.Tensor]


def blend_groups(fn: Callable[[list[tuple[int, int]]], Sequence[TileOutputs]], g: Grid, blend: str = "gaussian",
                 device: torch.device | str | None = None, group: int = 1, scale: float = 1.0,
                 progress: Progress | None = None) -> list[torch.Tensor]:
    """``Σ w·out / Σ w`` over the tiles of ``g``, accumulated in float32 on ``device`` (default: where the
    outputs are).

    ``fn(origins)`` gets up to ``group`` tile origins ``(y, x)`` (in visit order, :func:`tile_groups`) and returns,
    per tile, one tensor or a list of tensors ``[..., th·scale, tw·scale]`` (several outputs per tile, e.g. one per
    conditioning); the result is the list of blended ``[..., h·scale, w·scale]`` maps. The weights are
    :func:`blend_window` maps of the output tile's size, made once per size (float64 on the host, cast once to
    float32 on ``device``). A whole-plane grid is one call, returned unweighted (as float32).
    ``progress(done, total)`` after each tile.
    """
    acc: list[torch.Tensor] | None = None
    wsum = window = None
    done = 0
    for batch in tile_groups(g, group):
        outs = fn(batch)
        if len(outs) != len(batch):
            raise ValueError(f"the tile function returned {len(outs)} results for {len(batch)} tiles")
        for (y, x), out in zip(batch, outs):
            parts = [out] if isinstance(out, torch.Tensor) else list(out)
            if g.whole:
                if progress is not None:
                    progress(1, 1)
                return [p.to(device=device or p.device, dtype=torch.float32) for p in parts]
            ph, pw = parts[0].shape[-2:]
            if acc is None:
                device = device or parts[0].device
                oh, ow = round(g.h * scale), round(g.w * scale)
                acc = [torch.zeros((*p.shape[:-2], oh, ow), dtype=torch.float32, device=device) for p in parts]
                wsum = torch.zeros((oh, ow), dtype=torch.float32, device=device)
            if window is None or window.shape != (ph, pw):
                window = blend_window(ph, pw, blend, round(g.overlap * scale), device=device, dtype=torch.float32)
            oy, ox = round(y * scale), round(x * scale)
            for a, p in zip(acc, parts):
                a[..., oy:oy + ph, ox:ox + pw] += p.to(device=device, dtype=torch.float32) * window
            wsum[oy:oy + ph, ox:ox + pw] += window
            done += 1
            if progress is not None:
                progress(done, len(g))
    assert acc is not None and wsum is not None
    return [a / wsum for a in acc]


def blend_tiles(fn: Callable[[torch.Tensor, tuple[int, int]], torch.Tensor], x: torch.Tensor, g: Grid,
                scale: float = 1.0, blend: str = "gaussian", progress: Progress | None = None) -> torch.Tensor:
    """``Σ w·fn(tile) / Σ w`` over the tiles of ``x`` on grid ``g`` (``fn(tile, (y, x))`` → the tile's output,
    ``scale`` × its size), one tile per call, accumulated in float32 (:func:`blend_groups`)."""

    def run(origins: list[tuple[int, int]]) -> list[torch.Tensor]:
        return [fn(x[..., y:y + g.th, x0:x0 + g.tw], (y, x0)) for y, x0 in origins]

    return blend_groups(run, g, blend, scale=scale, progress=progress)[0]


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
