"""Resampling shared by SSEN's model, match and training: one antialiased bicubic downscale, bicubic upscale."""

from __future__ import annotations

import torch
import torch.nn.functional as F

SCALE = 4


def resize_bicubic(x: torch.Tensor, size: tuple[int, int], antialias: bool) -> torch.Tensor:
    """Bicubic resize; the antialiased kernel has no half-precision CPU implementation in torch, so reduced
    precision is resized in float32 and cast back (one rounding, as in the network itself)."""
    if antialias and x.dtype in (torch.float16, torch.bfloat16):
        return F.interpolate(x.float(), size=size, mode="bicubic", align_corners=False, antialias=True).to(x.dtype)
    return F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=antialias)


def bicubic_downscale(x: torch.Tensor, factor: int = SCALE) -> torch.Tensor:
    """The degradation: antialiased bicubic ``factor``× down (MATLAB ``imresize``-like) of ``[B,C,H,W]`` or
    ``[C,H,W]``; rows/columns beyond a multiple of ``factor`` are dropped. Not clamped (differentiable): an 8-bit
    low-resolution image is ``bicubic_downscale(hr).clamp(0, 1)``."""
    squeeze = x.ndim == 3
    y = x[None] if squeeze else x
    h, w = y.shape[-2] // factor, y.shape[-1] // factor
    y = resize_bicubic(y[..., :h * factor, :w * factor], (h, w), antialias=True)
    return y[0] if squeeze else y


def bicubic_up(x: torch.Tensor, factor: int = SCALE) -> torch.Tensor:
    return F.interpolate(x, scale_factor=factor, mode="bicubic", align_corners=False)
