"""IR-SDE's architecture entry (see :mod:`..arch`): the DA-CLIP universal-ir / wild-ir restoration networks."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..arch import Architecture, ModelDescriptor, Tiling, infer_or_raise, strict_load
from ..shapes import has_prefix
from .unet import build_irsde, infer_config

TITLE = "IR-SDE restoration network (DA-CLIP universal-ir / wild-ir)"
FOLDER = "irsde"


def detect(keys: frozenset[str]) -> bool:
    return "init_conv.weight" in keys and "final_conv.weight" in keys and has_prefix(keys, "downs.")


def memory(config, batch: int, size: tuple[int, int]) -> int:
    """Activation bytes of one fp32 network call on an ``h x w`` input (or one tile), with headroom: measured
    on CPU for universal-ir (nf 64) at 512², about 1.4 GB above the weights, i.e. ~21 floats × nf per pixel."""
    h, w = size
    return int(batch * h * w * config.nf * 4 * 32)


def restore_memory(config, size: tuple[int, int], tile: int | None, tile_mode: str = "exact") -> int:
    """Bytes one image's restoration needs beyond the weights. Whole image or ``tiles`` mode: one call on the
    image or on one tile. ``exact`` mode on an image larger than the tile keeps full-size maps (the padded input,
    the first level's two skips and up-path map, float32 SDE state) besides the tile's working set: ~(4·nf + 16)
    floats per pixel (measured, real-size universal-ir at 1024², tile 256: 1.47 GB above the inputs; this gives
    1.68 GB)."""
    h, w = size
    one = memory(config, 1, (min(h, tile or h), min(w, tile or w)))
    if tile and tile_mode == "exact" and max(h, w) > tile:
        return one + int(h * w * 4 * (4 * config.nf + 16))
    return one


def load(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
         source: str = "<state dict>") -> ModelDescriptor:
    config = infer_or_raise(infer_config, sd, source, TITLE)
    model = strict_load(build_irsde(config, "meta"), sd, source=source, title=TITLE, config=config,
                        dtype=dtype, device=device)
    return ModelDescriptor(model, ARCH.id, TITLE, config, source, tiling=Tiling.APPROXIMATE,
                           memory=lambda b, s: memory(config, b, s),
                           extra={"variant": config.variant, "context_dim": config.context_dim})


ARCH = Architecture("irsde", TITLE, FOLDER, detect, load)
ARCHITECTURES = (ARCH,)
