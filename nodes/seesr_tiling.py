"""SeeSR's latent tiling as model wrappers, so every core sampler samples tile by tile.

* :class:`SeeSRTiles` — a ``CALC_COND_BATCH`` wrapper: each model call runs per latent tile (official grid and
  Gaussian weights) and the denoised tiles are blended; the tile travels in ``transformer_options[TILE_OPTION]``
  for SeeSR's ControlNet to crop its hint.
* :class:`TiledMemory` — a ``PREPARE_SAMPLING`` wrapper: the memory estimate for one tile.

Both take the arguments core passes positionally or by keyword and forward what they do not use
(``*args, **kwargs``): newer ``comfy/sampler_helpers.py`` passes ``force_full_load=`` / ``force_offload=``.
This is the only node module that imports the SeeSR tile rules (``core/seesr/tiles.py``).
"""

from __future__ import annotations

import comfy.model_management as mm

from ..core.errors import InputError
from ..core.seesr.tiles import (
    DEFAULT_OVERLAP,
    DEFAULT_TILE,
    blend_latent_tiles,
    latent_grid,
)

TILE_OPTION = "aware_restore_seesr_tile"  # transformer_options entry: (y, x, th, tw, H, W) of the current tile

__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "TILE_OPTION", "SeeSRTiles", "TiledMemory", "check_tiled_conds",
           "latent_grid"]


def _arg(args: tuple, kwargs: dict, index: int, name: str):
    """A wrapper argument core passes either positionally (``args[index]``) or by keyword."""
    return args[index] if len(args) > index else kwargs[name]


def check_tiled_conds(conds, control_type: type) -> None:
    """Tiling crops the latent, not the conditioning: area/mask conds and other ControlNets would see the whole
    latent's geometry in every tile, so they are refused."""
    for group in conds:
        for c in group or ():
            if "area" in c or "mask" in c:
                raise InputError("SeeSR tiled sampling does not support area or mask conditioning (each tile "
                                 "would see the area of the whole latent); remove the tiling or the area/mask")
            ctrl = c.get("control")
            while ctrl is not None:
                if not isinstance(ctrl, control_type):
                    raise InputError(f"SeeSR tiled sampling supports only SeeSR's ControlNet, not "
                                     f"{type(ctrl).__name__} (it would squash its whole hint into each tile)")
                ctrl = ctrl.previous_controlnet


class SeeSRTiles:
    """``CALC_COND_BATCH`` wrapper ``(executor, model, conds, x_in, timestep, model_options, *rest)``: SeeSR's
    latent tiles (official grid and Gaussian weights) per model call."""

    def __init__(self, tile: int, overlap: int, control_type: type | None = None):
        self.tile, self.overlap = int(tile), int(overlap)
        self.control_type = control_type

    def grid(self, h: int, w: int):
        return latent_grid(h, w, self.tile, self.overlap)

    def __call__(self, executor, *args, **kwargs):
        conds, x_in = _arg(args, kwargs, 1, "conds"), _arg(args, kwargs, 2, "x_in")
        h, w = x_in.shape[-2:]
        g = self.grid(h, w)
        if g.whole:
            return executor(*args, **kwargs)
        if self.control_type is not None:
            check_tiled_conds(conds, self.control_type)
        x_pos = 2 if len(args) > 2 else None
        opt_pos = 4 if len(args) > 4 else None
        model_options = args[4] if opt_pos is not None else kwargs.get("model_options", {})

        def run(origins):
            (y, x), = origins
            mm.throw_exception_if_processing_interrupted()
            options = dict(model_options)
            options["transformer_options"] = dict(model_options.get("transformer_options", {}))
            options["transformer_options"][TILE_OPTION] = (y, x, g.th, g.tw, h, w)
            a, kw = list(args), dict(kwargs)
            crop = x_in[..., y:y + g.th, x:x + g.tw]
            if x_pos is None:
                kw["x_in"] = crop
            else:
                a[x_pos] = crop
            if opt_pos is None:
                kw["model_options"] = options
            else:
                a[opt_pos] = options
            return [executor(*a, **kw)]

        return [o.to(x_in.dtype) for o in blend_latent_tiles(run, g, x_in.device)]


class TiledMemory:
    """``PREPARE_SAMPLING`` wrapper ``(executor, model, noise_shape, conds, *rest, **kwargs)``: the memory
    estimate for one tile instead of the whole latent; every other argument is forwarded untouched."""

    def __init__(self, tiles: SeeSRTiles):
        self.tiles = tiles

    def __call__(self, executor, *args, **kwargs):
        in_args = len(args) > 1
        shape = list(args[1] if in_args else kwargs["noise_shape"])
        g = self.tiles.grid(shape[-2], shape[-1])
        if not g.whole:
            shape[-2:] = [g.th, g.tw]
        if in_args:
            args = (args[0], shape, *args[2:])
        else:
            kwargs = dict(kwargs, noise_shape=shape)
        return executor(*args, **kwargs)
