"""SeeSR's choice of tiling parameters for the denoising loop; the loops and weight maps are the pack's tiling
toolkit's (:mod:`..tiling`).

Rules of the official ``pipeline_seesr.py`` (re-stated, not copied): tiling happens only when ``h·w > tile²``; the
tile is square with side ``t = min(tile, h, w)``; tiles step by ``t − overlap`` and the last one snaps to the edge;
visit order is x-outer, y-inner (``order="columns"``); the noise predictions are blended with one Gaussian map
``G`` (``blend="seesr"``: made in float64 on the host as the official code does, used in float32 on the device)
before CFG. ``G``'s x centre is ``(t−1)/2`` but its y centre is ``t/2`` (an official quirk, kept for parity).
:func:`blend_latent_tiles` (the toolkit's loop with these choices) serves the diffusers sampler (noise
predictions) and ComfyUI's tiled model wrapper (denoised predictions — ``x − σ·ε`` is affine in ε with per-pixel
constants, so blending either gives the same result). The overlap follows the pack-wide rule (at most half the
tile actually used), which the official settings (test_seesr.py 96 / 4 at 8edecc7; test_seesr_turbo.py 96 / 32) never reach.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ..tiling import Grid, TileOutputs, blend_groups, blend_window, grid

DEFAULT_TILE = 96       # test_seesr.py and test_seesr_turbo.py --latent_tiled_size (latent pixels; 768 image px)
DEFAULT_OVERLAP = 32    # test_seesr_turbo.py 32 (test_seesr.py: 4 at 8edecc7); a third of the tile hides the seams


def needs_tiling(h: int, w: int, tile: int | None) -> bool:
    return bool(tile) and h * w > tile * tile


def latent_grid(h: int, w: int, tile: int | None, overlap: int) -> Grid:
    """The official latent tiles of an ``h × w`` latent (one whole-latent tile when it needs no tiling)."""
    if not needs_tiling(h, w, tile):
        return grid(h, w, None)
    return grid(h, w, tile, overlap, order="columns", square=True)


def tile_origins(h: int, w: int, tile: int, overlap: int) -> tuple[int, list[tuple[int, int]]]:
    """``(t, [(y, x), ...])`` in the official visit order (x outer, y inner); ``(0, [(0, 0)])`` when untiled."""
    g = latent_grid(h, w, tile, overlap)
    return (0, [(0, 0)]) if g.whole else (g.th, list(g.origins))


def gaussian_weights(t: int) -> torch.Tensor:
    """The official ``t×t`` float64 Gaussian map (on the host): g(x; (t−1)/2)·g(y; t/2),
    g(v; m) = exp(−(v−m)²/(2·0.01·t²))/√(2π·0.01)."""
    return blend_window(t, t, "seesr", dtype=torch.float64)


def blend_latent_tiles(fn: Callable[[list[tuple[int, int]]], Sequence[TileOutputs]], g: Grid,
                       device: torch.device | str = "cpu", group: int = 1) -> list[torch.Tensor]:
    """:func:`..tiling.blend_groups` with the official Gaussian map (``blend="seesr"``) on ``device``:
    ``fn(origins)`` gets up to ``group`` tile origins in the official visit order and returns, per tile, one tensor or a list of
    tensors ``[..., t, t]``; the result is the list of blended ``[..., h, w]`` maps (float32)."""
    return blend_groups(fn, g, "seesr", device=device, group=group)
