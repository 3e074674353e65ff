"""Merging SeeSR's DAPE LoRA (or a RAMLora checkpoint's own LoRA tensors) into RAM weights.

DAPE's LoRA has rank r and ``lora_alpha`` 1 (scale 1/r): ``W += B @ A / r`` for the tagging-head query/key; for the
Swin ``qkv`` (loralib ``MergedLinear`` with ``enable_lora=[q, k, v] = [True, False, True]``) the q rows get
``B[:D] @ A[:r] / r`` and the v rows ``B[D:] @ A[r:] / r``. LoRA of ``tag_encoder`` / ``text_decoder`` is skipped
(never trained, B = 0)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from ..errors import WrongModelError
from .keys import LORA_SUFFIXES, UNUSED_PREFIXES, StateDict

log = logging.getLogger(__name__)


def lora_pairs(lora: Mapping[str, torch.Tensor], source: str = "<DAPE>") -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """``(base, A, B)`` for every LoRA pair; a half pair is an error."""
    bases = sorted({k[: -len(".lora_A")] for k in lora if k.endswith(LORA_SUFFIXES)})
    out = []
    for base in bases:
        a, b = lora.get(base + ".lora_A"), lora.get(base + ".lora_B")
        if a is None or b is None:
            raise WrongModelError(f"'{source}': LoRA '{base}' lacks its lora_A or lora_B tensor")
        out.append((base, a, b))
    return out


def merge_lora(weights: StateDict, lora: Mapping[str, torch.Tensor], source: str = "<DAPE>") -> StateDict:
    """Return ``weights`` with every LoRA pair merged (float32 arithmetic, result in the base dtype)."""
    out = dict(weights)
    merged = 0
    for base, a, b in lora_pairs(lora, source):
        if base.startswith(UNUSED_PREFIXES):
            continue
        wkey = base + ".weight"
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
