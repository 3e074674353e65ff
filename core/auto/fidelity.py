"""Fidelity check: does a restored image still show what its input showed?

Each restored image is brought to the input's scale (antialiased bicubic), both are low-passed by ``blur``
(a box of ``compare_scale`` pixels: downscale by ``compare_scale`` and compare there), so removing noise, JPEG
blocks or rain streaks barely counts while moved content, recolouring or invented structure does. Measured:

* ``psnr`` / ``ssim`` on luminance (BT.601 Y) of those images — from ``torchmetrics`` (maintained, weight-free,
  pure torch; SSIM 11×11 Gaussian σ 1.5, K1 0.01, K2 0.03 as in Wang et al.);
* ``color_shift``: the largest difference of the mean Cb / Cr between the two (0..1 scale);
* ``clean_before`` / ``clean_after``: DA-CLIP's probability of "clean" for the input and the result (when a
  DA-CLIP model is given; meaningful only with the released weights);
* a heat map ``1 − SSIM`` per pixel (upsampled to the restored size): where the result departs from the input.

Pass: ``psnr ≥ min_psnr``, ``ssim ≥ min_ssim``, ``color_shift ≤ max_color_shift`` and (when measured)
``clean_after ≥ clean_before − max_clean_drop``. Among candidates the most faithful is the one that passes with
the highest SSIM (ties: PSNR); when none passes, the highest SSIM.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..image import check_finite, resize, split_alpha

_Y = (0.299, 0.587, 0.114)
_CB = (-0.168736, -0.331264, 0.5)
_CR = (0.5, -0.418688, -0.081312)


@dataclass(frozen=True)
class FidelityThresholds:
    min_psnr: float = 26.0
    min_ssim: float = 0.80
    max_color_shift: float = 0.03
    max_clean_drop: float = 0.10
    compare_scale: int = 2

    def __post_init__(self) -> None:
        if self.compare_scale < 1:
            raise InputError(f"compare_scale must be at least 1, got {self.compare_scale}")


@dataclass
class Fidelity:
    psnr: float
    ssim: float
    color_shift: float
    clean_before: float | None
    clean_after: float | None
    passed: bool
    failed: list[str]

    def to_dict(self) -> dict:
        return asdict(self)


def _mix(x: torch.Tensor, w: tuple[float, float, float]) -> torch.Tensor:
    return (x * torch.tensor(w, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)).sum(dim=1, keepdim=True)


def _comparable(inputs: torch.Tensor, restored: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    h, w = inputs.shape[-2:]
    r = resize(restored.float(), (h, w), mode="bicubic", antialias=True).clamp(0, 1)
    x = inputs.float()
    if scale > 1 and min(h, w) // scale >= 11:
        size = (h // scale, w // scale)
        x, r = resize(x, size, "bicubic", antialias=True).clamp(0, 1), resize(r, size, "bicubic", True).clamp(0, 1)
    if min(x.shape[-2:]) < 11:  # SSIM's 11x11 window: enlarge tiny or sliver images (nearest, content unchanged)
        f = -(-11 // min(x.shape[-2:]))
        x, r = (F.interpolate(t, scale_factor=f, mode="nearest") for t in (x, r))
    return x, r


def measure(inputs: torch.Tensor, restored: torch.Tensor, thresholds: FidelityThresholds = FidelityThresholds(),
            clean_before: torch.Tensor | None = None, clean_after: torch.Tensor | None = None
            ) -> tuple[list[Fidelity], torch.Tensor]:
    """Fidelity of ``restored`` ``[B,3,H',W']`` against ``inputs`` ``[B or 1,3,H,W]`` (any sizes; [0,1]).
    Returns one :class:`Fidelity` per restored image and heat maps ``[B,H',W']`` in [0,1]."""
    from torchmetrics.functional.image import (
        peak_signal_noise_ratio,
        structural_similarity_index_measure,
    )

    t = thresholds
    x, _ = split_alpha(inputs)
    r, _ = split_alpha(restored)
    check_finite(x, "input image")
    check_finite(r, "restored image")
    if x.shape[0] not in (1, r.shape[0]):
        raise InputError(f"the input batch has {x.shape[0]} images but the restored batch has {r.shape[0]}; give "
                         "one input for all or one per restored image")
    x = x.expand(r.shape[0], -1, -1, -1).cpu()
    xs, rs = _comparable(x, r.cpu(), t.compare_scale)
    ya, yb = _mix(xs, _Y), _mix(rs, _Y)
    psnr = peak_signal_noise_ratio(yb, ya, data_range=1.0, reduction="none", dim=(1, 2, 3))
    ssim, ssim_map = structural_similarity_index_measure(yb, ya, data_range=1.0, reduction="none",
                                                         return_full_image=True)
    shift = torch.stack([(_mix(rs, c).mean(dim=(1, 2, 3)) - _mix(xs, c).mean(dim=(1, 2, 3))).abs()
                         for c in (_CB, _CR)]).amax(dim=0)
    heat = (1 - ssim_map.clamp(-1, 1)).clamp(0, 1)
    heat = F.interpolate(heat, size=r.shape[-2:], mode="bilinear", align_corners=False)[:, 0].clamp(0, 1)
    out = []
    for i in range(r.shape[0]):
        p = float(psnr[i].clamp(max=99.0))
        cb = None if clean_before is None else float(clean_before[min(i, clean_before.shape[0] - 1)])
        ca = None if clean_after is None else float(clean_after[i])
        failed = []
        if p < t.min_psnr:
            failed.append(f"psnr {p:.1f} < {t.min_psnr}")
        if float(ssim[i]) < t.min_ssim:
            failed.append(f"ssim {float(ssim[i]):.3f} < {t.min_ssim}")
        if float(shift[i]) > t.max_color_shift:
            failed.append(f"color shift {float(shift[i]):.3f} > {t.max_color_shift}")
        if cb is not None and ca is not None and ca < cb - t.max_clean_drop:
            failed.append(f"clean probability fell {cb:.2f} -> {ca:.2f}")
        out.append(Fidelity(round(p, 4), round(float(ssim[i]), 5), round(float(shift[i]), 5),
                            None if cb is None else round(cb, 5), None if ca is None else round(ca, 5),
                            not failed, failed))
    return out, heat


def most_faithful(results: list[Fidelity]) -> int:
    """Index of the most faithful candidate (passing first, then SSIM, then PSNR)."""
    if not results:
        raise InputError("no candidates to choose from")
    return max(range(len(results)), key=lambda i: (results[i].passed, results[i].ssim, results[i].psnr))


def heat_image(heat: torch.Tensor) -> torch.Tensor:
    """Heat maps ``[B,H,W]`` in [0,1] → a colour image ``[B,3,H,W]`` (black → red → yellow → white)."""
    v = heat.float().clamp(0, 1)[:, None] * 3
    return torch.cat([v.clamp(0, 1), (v - 1).clamp(0, 1), (v - 2).clamp(0, 1)], dim=1)
