"""RAM / DAPE architecture entries (see :mod:`..arch`).

Names used throughout the pack: **RAM** is the architecture and its base checkpoint (Swin-L encoder + tagging
head, ``ram_swin_large_14m.pth``); **DAPE** is SeeSR's LoRA for it (``DAPE.pth``, an *adapter*); the loaded
model — RAM with or without DAPE merged — is the **tagger** (``Tagger``, the ``DAPE_MODEL`` socket).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..arch import Architecture, ModelDescriptor, Tiling, infer_or_raise, strict_load
from ..errors import WrongModelError
from .keys import DAPE_TITLE, FOLDER, RAM_TITLE, detect_dape, detect_ram, is_lora_only, keep_ram, split_ram
from .lora import lora_pairs, merge_lora
from .model import RamConfig, Tagger

CHUNK = 4  # images per tagger call
BYTES_PER_IMAGE = 600 * 2**20  # activation estimate for Swin-L + tagging head at 384 px (fp32)


def memory(config, batch: int, size: tuple[int, int]) -> int:
    """Every image is stretched to the model's input size, so only the batch counts (chunks of CHUNK)."""
    scale = (config.swin.image_size / 384) ** 2
    return int(min(batch, CHUNK) * BYTES_PER_IMAGE * scale)


def load_ram(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
             source: str = "<state dict>", dape: Mapping[str, torch.Tensor] | ModelDescriptor | None = None,
             dape_source: str = "<DAPE>", image_size: int | None = None) -> ModelDescriptor:
    """RAM (+ an optional DAPE LoRA state dict, merged) → tagger descriptor."""
    if isinstance(dape, ModelDescriptor):
        dape_source, dape = dape.source, dape.model
    weights, lora, _ignored = split_ram(sd)
    if lora or dape is not None:  # merge in float32 (a half-precision file keeps its precision for the rest)
        weights = {k: v.float() if v.is_floating_point() else v for k, v in weights.items()}
    if lora:  # a SeeSR RAMLora state dict saved whole: its LoRA tensors are merged like DAPE's
        weights = merge_lora(weights, lora, source)
    if dape is not None:
        if not is_lora_only(dape):
            raise WrongModelError(f"'{dape_source}' is not a DAPE LoRA file (DAPE.pth holds only lora_A/lora_B "
                                  "tensors); give the RAM checkpoint as the RAM model and DAPE.pth as the DAPE file.")
        weights = merge_lora(weights, dape, dape_source)
    config = infer_or_raise(lambda w: RamConfig.from_state_dict(w, image_size), weights, source, RAM_TITLE)
    with torch.device("meta"):
        model = Tagger(config)
    model = strict_load(model, weights, source=source, title=RAM_TITLE, dtype=dtype, device=device)
    model.dape_merged = bool(lora) or dape is not None
    return ModelDescriptor(model, RAM.id, RAM_TITLE, config, source, tiling=Tiling.NONE,
                           dtypes=(torch.float32, torch.float16, torch.bfloat16),
                           memory=lambda b, s: memory(config, b, s),
                           extra={"dape_merged": model.dape_merged})


def load_dape(sd: Mapping[str, torch.Tensor], dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
              source: str = "<state dict>") -> ModelDescriptor:
    """A DAPE LoRA is an adapter: its descriptor carries the validated LoRA tensors, to be merged into RAM."""
    pairs = lora_pairs(sd, source)
    return ModelDescriptor(dict(sd), DAPE.id, DAPE_TITLE, {"pairs": len(pairs)}, source, tiling=Tiling.NONE)


DAPE = Architecture("dape", DAPE_TITLE, FOLDER, detect_dape, load_dape, kind="adapter")
RAM = Architecture("ram", RAM_TITLE, FOLDER, detect_ram, load_ram, keep_ram)
ARCHITECTURES = (RAM, DAPE)
