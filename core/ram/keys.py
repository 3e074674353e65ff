"""RAM / DAPE file names, key names and key-set tests: what :mod:`.arch` (detection), :mod:`.lora` (merging) and
:mod:`.load` (reading files) share. A leaf: it imports nothing of the family."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..shapes import has_prefix

StateDict = dict[str, torch.Tensor]

RAM_TITLE = "RAM tagger (Swin-L)"
DAPE_TITLE = "DAPE LoRA (SeeSR)"
FOLDER = "dape"
RAM_FILE, DAPE_FILE = "ram_swin_large_14m.pth", "DAPE.pth"
# which file of the folder is RAM / DAPE when none is named: the official file, then converted ones
# (ram_dape_fp16.safetensors); never RAM++ (ram_plus_swin_large_14m.pth), which a plain "ram*" would pick first
RAM_PATTERNS = ("ram_swin_large_14m*", "ram_swin*", "ram*.safetensors")
DAPE_PATTERNS = ("DAPE*",)
LORA_SUFFIXES = (".lora_A", ".lora_B")
UNUSED_PREFIXES = ("tag_encoder.", "text_decoder.")
RECOMPUTED_BUFFERS = (".relative_position_index", ".attn_mask")


def is_lora_only(keys) -> bool:
    keys = list(keys)
    return bool(keys) and all(k.endswith(LORA_SUFFIXES) for k in keys)


def detect_dape(keys: frozenset[str]) -> bool:
    return is_lora_only(keys)


def detect_ram(keys: frozenset[str]) -> bool:
    return "label_embed" in keys and has_prefix(keys, "visual_encoder.") and not is_lora_only(keys)


def keep_ram(key: str) -> bool:
    """Inference weights: the captioning parts (``tag_encoder.*``, ``text_decoder.*``) and the Swin buffers that
    are recomputed (``relative_position_index``, ``attn_mask``) are dropped."""
    return not key.startswith(UNUSED_PREFIXES) and not key.endswith(RECOMPUTED_BUFFERS)


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
