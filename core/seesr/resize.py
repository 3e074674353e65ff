"""SeeSR's image size rules (``test_seesr.py``): pre-scale tiny inputs, ×upscale, resize to a multiple of 8, and
resize the result back to exactly ``upscale ×`` the input size."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import InputError
from ..image import ImageInputError, check_finite, resize


@dataclass(frozen=True)
class SizePlan:
    """All sizes are (width, height), as the official code (PIL) writes them."""

    input: tuple[int, int]
    prescaled: tuple[int, int] | None
    upscaled: tuple[int, int]
    process: tuple[int, int]
    final: tuple[int, int]

    @property
    def latent_hw(self) -> tuple[int, int]:
        return self.process[1] // 8, self.process[0] // 8


def plan_sizes(w: int, h: int, upscale: int = 4, process_size: int = 512) -> SizePlan:
    """The official size sequence for a ``w×h`` input (Python ``int()`` truncation as in the original)."""
    if w < 1 or h < 1:
        raise ImageInputError(f"image of size {w}x{h} is empty")
    if upscale < 1:
        raise InputError(f"upscale must be >= 1, got {upscale}")
    pre = None
    cw, ch = w, h
    short = process_size // upscale
    if cw < short or ch < short:
        s = short / min(cw, ch)
        pre = (int(s * cw), int(s * ch))
        cw, ch = pre
    up = (cw * upscale, ch * upscale)
    proc = (up[0] // 8 * 8, up[1] // 8 * 8)
    if proc[0] < 8 or proc[1] < 8:
        raise ImageInputError(f"image {w}x{h} is too small to process (size {proc[0]}x{proc[1]} after ×{upscale})")
    return SizePlan((w, h), pre, up, proc, (w * upscale, h * upscale))


def condition_image(lr: torch.Tensor, plan: SizePlan) -> torch.Tensor:
    """Apply the plan's resizes (bicubic, antialiased like PIL) to ``[B,3,H,W]`` in [0,1] → condition image."""
    check_finite(lr, "LR image")
    x = lr
    if plan.prescaled is not None:
        x = resize(x, (plan.prescaled[1], plan.prescaled[0]), "bicubic")
    x = resize(x, (plan.upscaled[1], plan.upscaled[0]), "bicubic")
    x = resize(x, (plan.process[1], plan.process[0]), "bicubic")
    return x.clamp(0, 1)


def to_final(x: torch.Tensor, plan: SizePlan) -> torch.Tensor:
    """Resize the processed output to exactly ``upscale ×`` the input (always, as ``resize_flag`` is forced on)."""
    return resize(x, (plan.final[1], plan.final[0]), "bicubic")
