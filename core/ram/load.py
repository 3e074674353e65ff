"""Loading RAM checkpoints (+ SeeSR's DAPE LoRA) into a ``Tagger``, and converting them to safetensors.

* The RAM file (``ram_swin_large_14m.pth``: ``{'model': state_dict}``) is read with ``core.checkpoint``
  (``torch.load(weights_only=True, mmap=True)`` or safetensors). Only the inference subset is kept:
  ``tag_encoder.*`` / ``text_decoder.*`` (captioning, 641 keys in the real file) are ignored and listed in the
  debug log; the Swin ``relative_position_index`` / ``attn_mask`` buffers are recomputed; the old
  ``vision_multi`` prefix is read as ``tagging_head``.
* ``DAPE.pth`` holds only LoRA tensors (rank r, ``lora_alpha`` 1, so scale 1/r). They are merged at load:
  ``W += B @ A / r`` for the tagging-head query/key; for the Swin ``qkv`` (loralib ``MergedLinear`` with
  ``enable_lora=[q, k, v] = [True, False, True]``) the q rows get ``B[:D] @ A[:r] / r`` and the v rows
  ``B[D:] @ A[r:] / r``. LoRA of ``tag_encoder`` / ``text_decoder`` is skipped (never trained, B = 0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..checkpoint import SAFETENSORS_SUFFIXES, load_state_dict, read_metadata, save_safetensors
from ..registry import WrongModelError, describe, require_family
from .model import RamConfig, Tagger
from .swin import SwinConfig

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
Source = str | os.PathLike | Mapping[str, torch.Tensor]

UNUSED_PREFIXES = ("tag_encoder.", "text_decoder.")
RECOMPUTED_BUFFERS = (".relative_position_index", ".attn_mask")
LORA_SUFFIXES = (".lora_A", ".lora_B")
RAM_FILE, DAPE_FILE = "ram_swin_large_14m.pth", "DAPE.pth"


def _name(src: Source) -> str:
    return str(src) if not isinstance(src, Mapping) else "<state dict>"


def _read(src: Source) -> StateDict:
    return load_state_dict(src)


def _is_lora_only(sd: Mapping[str, torch.Tensor]) -> bool:
    return bool(sd) and all(k.endswith(LORA_SUFFIXES) for k in sd)


def split_ram(sd: Mapping[str, torch.Tensor]) -> tuple[StateDict, StateDict, list[str]]:
    """RAM state dict → (inference weights, LoRA tensors found in it, ignored keys)."""
    weights: StateDict = {}
    lora: StateDict = {}
    ignored: list[str] = []
    for key, t in sd.items():
        if key.startswith("vision_multi."):
            key = "tagging_head." + key[len("vision_multi."):]
        if key.startswith(UNUSED_PREFIXES) or key.endswith(RECOMPUTED_BUFFERS):
            ignored.append(key)
        elif key.endswith(LORA_SUFFIXES):
            lora[key] = t
        else:
            weights[key] = t
    return weights, lora, ignored


def check_ram(sd: Mapping[str, torch.Tensor], source: str) -> None:
    if _is_lora_only(sd):
        raise WrongModelError(
            f"'{source}' is a DAPE LoRA file (only LoRA tensors): it cannot be used alone. Load the base RAM "
            f"checkpoint ({RAM_FILE}) as the RAM model and give this file as the optional DAPE LoRA.")
    require_family(sd, "ram", source=source)


def merge_lora(weights: StateDict, lora: Mapping[str, torch.Tensor], source: str = "<DAPE>") -> StateDict:
    """Return ``weights`` with every LoRA pair merged (float32 arithmetic, result in the base dtype)."""
    out = dict(weights)
    bases = sorted({k[: -len(".lora_A")] for k in lora if k.endswith(LORA_SUFFIXES)})
    merged = 0
    for base in bases:
        if base.startswith(UNUSED_PREFIXES):
            continue
        a, b = lora.get(base + ".lora_A"), lora.get(base + ".lora_B")
        wkey = base + ".weight"
        if a is None or b is None:
            raise WrongModelError(f"'{source}': LoRA '{base}' lacks its lora_A or lora_B tensor")
        if wkey not in out:
            raise WrongModelError(f"'{source}': LoRA for '{base}' has no matching weight in the RAM model; "
                                  f"is the DAPE file for this RAM checkpoint?")
        w = out[wkey]
        a32, b32 = a.float(), b.float()
        rows, cols = w.shape
        if base.endswith(".qkv"):
            d = rows // 3
            groups = b.shape[0] // d if d and b.shape[0] % d == 0 else 0
            enabled = {2: (0, 2), 3: (0, 1, 2), 1: (0,)}.get(groups)
            if enabled is None or a.shape[0] % groups or a.shape[1] != cols:
                raise WrongModelError(f"'{source}': LoRA '{base}' A {tuple(a.shape)} / B {tuple(b.shape)} does not "
                                      f"fit the qkv weight {tuple(w.shape)} of this RAM model")
            r = a.shape[0] // groups
            delta = torch.zeros(rows, cols, dtype=torch.float32, device=w.device)
            for g, part in enumerate(enabled):
                delta[part * d:(part + 1) * d] = b32[g * d:(g + 1) * d] @ a32[g * r:(g + 1) * r] / r
        else:
            r = a.shape[0]
            if a.shape[1] != cols or b.shape != (rows, r):
                raise WrongModelError(f"'{source}': LoRA '{base}' A {tuple(a.shape)} / B {tuple(b.shape)} does not "
                                      f"fit the weight {tuple(w.shape)} of this RAM model")
            delta = b32 @ a32 / r
        out[wkey] = (w.float() + delta).to(w.dtype)
        merged += 1
    log.debug("merged %d LoRA tensors pairs from %s", merged, source)
    return out


def inference_state_dict(ram: Source, dape: Source | None = None, dtype: torch.dtype | None = torch.float32,
                         ) -> tuple[StateDict, dict[str, str]]:
    """The merged inference state dict (official key names) and a little provenance metadata."""
    ram_name = _name(ram)
    sd = _read(ram)
    check_ram(sd, ram_name)
    meta: dict[str, str] = {}
    if not isinstance(ram, Mapping) and Path(ram).suffix.lower() in SAFETENSORS_SUFFIXES:
        meta = read_metadata(ram)
    image_size = meta.get("image_size")
    if image_size is None:
        try:
            image_size = SwinConfig.from_state_dict(sd, "visual_encoder.").image_size
        except (KeyError, ValueError):  # reported with a clear message by build_tagger
            image_size = 384
    weights, lora, ignored = split_ram(sd)
    if ignored:
        log.debug("RAM %s: ignored %d keys not used for tagging (e.g. %s)", ram_name, len(ignored), ignored[0])
    if dtype is not None:
        weights = {k: v.to(dtype) if v.is_floating_point() else v for k, v in weights.items()}
    if lora:  # a SeeSR RAMLora state dict saved whole: its LoRA tensors are merged like DAPE's
        weights = merge_lora(weights, lora, ram_name)
    merged = meta.get("dape_merged") == "true"
    if dape is not None:
        dape_name = _name(dape)
        if merged:
            raise ValueError(f"'{ram_name}' already has a DAPE LoRA merged (converted file); do not give "
                             f"'{dape_name}' again.")
        dsd = _read(dape)
        if not _is_lora_only(dsd):
            raise WrongModelError(
                f"'{dape_name}' is not a DAPE LoRA file ({DAPE_FILE} holds only lora_A/lora_B tensors): it looks "
                f"like {describe(dsd)}. Give the RAM checkpoint as the RAM model and {DAPE_FILE} as the DAPE file.")
        weights = merge_lora(weights, dsd, dape_name)
        merged = True
    return weights, {"family": "ram", "dape_merged": "true" if merged else "false", "image_size": str(image_size)}


def build_tagger(weights: Mapping[str, torch.Tensor], image_size: int | None = None) -> Tagger:
    """Build a ``Tagger`` whose hyper-parameters come from the tensor shapes and load ``weights`` strictly
    (assigning the tensors, so meta-device state dicts work too). ``image_size``: the input side (RAM: 384;
    shapes cannot show it, a stored ``attn_mask`` buffer can)."""
    try:
        cfg = RamConfig.from_state_dict(weights, image_size)
    except KeyError as exc:
        raise ValueError(f"incomplete RAM checkpoint: tensor {exc} is missing") from None
    with torch.device("meta"):
        model = Tagger(cfg)
    model.load_state_dict(dict(weights), strict=True, assign=True)
    return model.eval().requires_grad_(False)


def load_tagger(ram_path_or_sd: Source, dape_path_or_sd: Source | None = None,
                dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tagger:
    """Load RAM (``ram_swin_large_14m.pth`` or a converted .safetensors) with DAPE LoRA merged if given."""
    weights, meta = inference_state_dict(ram_path_or_sd, dape_path_or_sd, dtype)
    model = build_tagger(weights, int(meta["image_size"]))
    model.dape_merged = meta["dape_merged"] == "true"
    if device is not None:
        model.to(device)
    return model


def convert(ram: Source, output: str | os.PathLike, dape: Source | None = None,
            dtype: torch.dtype = torch.float16) -> Path:
    """Write the inference subset (DAPE merged when given) as safetensors (fp16 by default, ≈425 MB)."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"the converted file must end in .safetensors, got '{output}'")
    weights, meta = inference_state_dict(ram, dape, torch.float32)
    meta["source"] = Path(_name(ram)).name
    if dape is not None:
        meta["dape_source"] = Path(_name(dape)).name
    return save_safetensors(weights, output, metadata=meta, dtype=dtype)
