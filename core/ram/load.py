"""Loading RAM checkpoints (+ SeeSR's DAPE LoRA) into a ``Tagger``, and converting them to safetensors.

* The RAM file (``ram_swin_large_14m.pth``: ``{'model': state_dict}``) is read with ``core.checkpoint``
  (``torch.load(weights_only=True, mmap=True)`` or safetensors). Only the inference subset is kept:
  ``tag_encoder.*`` / ``text_decoder.*`` (captioning, 641 keys in the real file) are ignored and listed in the
  debug log; the Swin ``relative_position_index`` / ``attn_mask`` buffers are recomputed; the old
  ``vision_multi`` prefix is read as ``tagging_head``.
* ``DAPE.pth`` holds only LoRA tensors; they are merged at load (:mod:`.lora`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from .. import registry
from ..arch import ModelDescriptor
from ..checkpoint import SAFETENSORS_SUFFIXES, load_state_dict, read_metadata, save_safetensors
from ..errors import InputError, WrongModelError
from .arch import RAM
from .keys import DAPE_FILE, FOLDER, RAM_FILE, StateDict, is_lora_only, split_ram
from .lora import merge_lora
from .model import Tagger
from .swin import SwinConfig

log = logging.getLogger(__name__)

Source = str | os.PathLike | Mapping[str, torch.Tensor]


class DapeAlreadyMergedError(InputError):
    """A DAPE LoRA was given for a converted RAM file that already has DAPE merged."""


def _name(src: Source) -> str:
    return str(src) if not isinstance(src, Mapping) else "<state dict>"


def check_ram(sd: Mapping[str, torch.Tensor], source: str) -> None:
    if is_lora_only(sd):
        raise WrongModelError(
            f"'{source}' is a DAPE LoRA file (only LoRA tensors): it cannot be used alone. Load the base RAM "
            f"checkpoint ({RAM_FILE}) as the RAM model and give this file as the optional DAPE LoRA.")
    registry.require(sd, RAM.id, source=source, folder=FOLDER)


def _read_ram(ram: Source) -> tuple[StateDict, dict[str, str], str]:
    name = _name(ram)
    sd = load_state_dict(ram)
    check_ram(sd, name)
    meta: dict[str, str] = {}
    if not isinstance(ram, Mapping) and Path(ram).suffix.lower() in SAFETENSORS_SUFFIXES:
        meta = read_metadata(ram)
    return sd, meta, name


def _image_size(sd: Mapping[str, torch.Tensor], meta: Mapping[str, str]) -> int:
    if "image_size" in meta:
        return int(meta["image_size"])
    try:
        return SwinConfig.from_state_dict(sd, "visual_encoder.").image_size
    except (KeyError, ValueError):  # reported with a clear message when the model is built
        return 384


def _read_dape(dape: Source) -> StateDict:
    dsd = load_state_dict(dape)
    if not is_lora_only(dsd):
        raise WrongModelError(
            f"'{_name(dape)}' is not a DAPE LoRA file ({DAPE_FILE} holds only lora_A/lora_B tensors): it looks "
            f"like {registry.describe(dsd)}. Give the RAM checkpoint as the RAM model and {DAPE_FILE} as the DAPE "
            "file.")
    return dsd


def load_tagger_descriptor(ram: Source, dape: Source | None = None, dtype: torch.dtype = torch.float32,
                           device: torch.device | str | None = None) -> ModelDescriptor:
    """Load RAM (``ram_swin_large_14m.pth`` or a converted .safetensors) with a DAPE LoRA merged if given.

    A converted file that already has DAPE merged ignores ``dape`` (logged; ``extra['dape_skipped']``)."""
    sd, meta, name = _read_ram(ram)
    already = meta.get("dape_merged") == "true"
    skipped = False
    if dape is not None and already:
        log.info("%s already has a DAPE LoRA merged; %s is not applied again", name, _name(dape))
        dape, skipped = None, True
    lora = None if dape is None else _read_dape(dape)
    desc = RAM.load(sd, dtype=dtype, device=device or "cpu", source=name, dape=lora,
                    dape_source=_name(dape) if dape is not None else "<DAPE>", image_size=_image_size(sd, meta))
    desc.model.dape_merged = desc.model.dape_merged or already
    desc.extra.update(dape_merged=desc.model.dape_merged, dape_skipped=skipped,
                      dape_file=None if dape is None else Path(_name(dape)).name)
    return desc


def load_tagger(ram_path_or_sd: Source, dape_path_or_sd: Source | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tagger:
    """:func:`load_tagger_descriptor`, returning the ``Tagger`` module."""
    return load_tagger_descriptor(ram_path_or_sd, dape_path_or_sd, dtype, device).model


def build_tagger(weights: Mapping[str, torch.Tensor], image_size: int | None = None) -> Tagger:
    """A ``Tagger`` whose hyper-parameters come from the tensor shapes, ``weights`` loaded strictly (assigning
    the tensors, so meta-device state dicts work too)."""
    return RAM.load(weights, dtype=None, image_size=image_size).model


def inference_state_dict(ram: Source, dape: Source | None = None, dtype: torch.dtype | None = torch.float32,
                         ) -> tuple[StateDict, dict[str, str]]:
    """The merged inference state dict (official key names) and a little provenance metadata."""
    sd, meta, name = _read_ram(ram)
    image_size = _image_size(sd, meta)
    weights, lora, ignored = split_ram(sd)
    if ignored:
        log.debug("RAM %s: ignored %d keys not used for tagging (e.g. %s)", name, len(ignored), ignored[0])
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    if lora:
        weights = merge_lora(weights, lora, name)
    merged = meta.get("dape_merged") == "true"
    if dape is not None:
        if merged:
            raise DapeAlreadyMergedError(f"'{name}' already has a DAPE LoRA merged (converted file); do not give "
                                         f"'{_name(dape)}' again.")
        weights = merge_lora(weights, _read_dape(dape), _name(dape))
        merged = True
    return weights, {"family": "ram", "dape_merged": "true" if merged else "false", "image_size": str(image_size)}


def convert(ram: Source, output: str | os.PathLike, dape: Source | None = None,
            dtype: torch.dtype = torch.float16) -> Path:
    """Write the inference subset (DAPE merged when given) as safetensors (fp16 by default, ≈425 MB)."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise InputError(f"the converted file must end in .safetensors, got '{output}'")
    weights, meta = inference_state_dict(ram, dape, torch.float32)
    meta["source"] = Path(_name(ram)).name
    if dape is not None:
        meta["dape_source"] = Path(_name(dape)).name
    return save_safetensors(weights, output, metadata=meta, dtype=dtype)


__all__ = ["DapeAlreadyMergedError", "build_tagger", "check_ram", "convert", "inference_state_dict", "load_tagger",
           "load_tagger_descriptor"]
