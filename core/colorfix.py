"""Colour correction of a restored image towards a reference (SeeSR's AdaIN and wavelet colour fix).

Tensor-native, batch-safe and size-agnostic: ``content`` and ``reference`` are ``[B,3,H,W]`` of the same size
(resize the reference first). Outputs are the official, unclamped values; clamp for display.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .errors import InputError
from .image import check_finite, match_batch, resize

_EPS = 1e-5


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    # unbiased (N-1), as the official calc_mean_std; a single pixel has no spread (its unbiased variance is 0/0)
    var = flat.var(dim=-1, unbiased=flat.shape[-1] > 1) + _EPS
    return flat.mean(dim=-1).view(b, c, 1, 1), var.sqrt().view(b, c, 1, 1)


def _check(content: torch.Tensor, reference: torch.Tensor) -> None:
    if content.ndim != 4 or reference.ndim != 4:
        raise InputError(f"colour fix expects [B,C,H,W] tensors, got {tuple(content.shape)} and "
                         f"{tuple(reference.shape)}")
    if content.shape[-2:] != reference.shape[-2:] or content.shape[1] != reference.shape[1]:
        raise InputError(f"colour fix needs content and reference of the same size and channels, got "
                         f"{tuple(content.shape)} and {tuple(reference.shape)}; resize the reference first")
    if reference.shape[0] not in (1, content.shape[0]):
        raise InputError(f"reference batch {reference.shape[0]} does not match content batch {content.shape[0]}")
    if content.shape[0] == 0 or min(content.shape[-2:]) < 1:
        raise InputError(f"colour fix got an empty image batch {tuple(content.shape)}")
    check_finite(content, "image to colour-fix")
    check_finite(reference, "colour reference")


def adain(content: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-image, per-channel mean/std transfer from ``reference`` to ``content``."""
    _check(content, reference)
    c_mean, c_std = _mean_std(content.float())
    r_mean, r_std = _mean_std(reference.float())
    out = (content.float() - c_mean) / c_std * r_std + r_mean
    return out.to(content.dtype)


def _blur(x: torch.Tensor, radius: int) -> torch.Tensor:
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], dtype=x.dtype, device=x.device) / 16.0
    c = x.shape[1]
    weight = k.expand(c, 1, 3, 3)
    x = F.pad(x, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(x, weight, groups=c, dilation=radius)


def _decompose(x: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    high = torch.zeros_like(x)
    for i in range(levels):
        low = _blur(x, 2 ** i)
        high = high + (x - low)
        x = low
    return high, x


def wavelet(content: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """High frequencies of ``content`` + low frequencies of ``reference`` (5-level dilated wavelet split)."""
    _check(content, reference)
    c_high, _ = _decompose(content.float())
    _, r_low = _decompose(reference.float())
    return (c_high + r_low).to(content.dtype)


METHODS = {"wavelet": wavelet, "adain": adain}
METHOD_NAMES = ("wavelet", "adain", "none")


def color_fix(content: torch.Tensor, reference: torch.Tensor, method: str = "wavelet", clamp: bool = False
              ) -> torch.Tensor:
    """The one colour fix of the pack: ``wavelet``, ``adain`` or ``none`` (``content`` unchanged); ``clamp``
    clips the result to [0, 1]."""
    if method in ("none", "nofix", ""):
        out = content
    else:
        try:
            fn = METHODS[method]
        except KeyError:
            raise InputError(f"unknown colour-fix method {method!r}; choose one of {', '.join(METHOD_NAMES)}"
                             ) from None
        out = fn(content, reference)
    return out.clamp(0, 1) if clamp else out


def color_fix_to(content: torch.Tensor, reference: torch.Tensor, method: str = "wavelet") -> torch.Tensor:
    """Colour-fix ``content`` ``[B,3,H,W]`` towards ``reference`` of any size (resized bicubically, antialiased,
    to the content size) and batch 1 or B."""
    ref = match_batch(reference, content.shape[0], "colour reference")
    ref = resize(ref, content.shape[-2:], mode="bicubic", antialias=True, clamp=True)
    return color_fix(content, ref, method)
