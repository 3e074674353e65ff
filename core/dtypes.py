"""The one map between dtype names (node widgets, CLI flags, file metadata) and torch dtypes."""

from __future__ import annotations

import torch

from .errors import InputError

DTYPES: dict[str, torch.dtype | None] = {
    "auto": None,  # the front end decides (ComfyUI: fp16/bf16 where the device supports it; CPU: fp32)
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
}
DTYPE_NAMES = tuple(DTYPES)


def parse_dtype(name: str | torch.dtype | None, what: str = "dtype") -> torch.dtype | None:
    """``'fp16'`` → ``torch.float16``; ``'auto'``/None → None; a torch dtype passes through."""
    if name is None or isinstance(name, torch.dtype):
        return name
    key = str(name).lower().strip()
    aliases = {"float32": "fp32", "float16": "fp16", "half": "fp16", "bfloat16": "bf16", "float": "fp32"}
    key = aliases.get(key, key)
    if key not in DTYPES:
        raise InputError(f"{what} must be one of {', '.join(DTYPE_NAMES)}; got {name!r}")
    return DTYPES[key]
