"""Validation during SSEN training on a folder or scikit-image's photos (the package photo set uses
:mod:`.heldout`)."""

from __future__ import annotations

import torch

from ...core.ssen.model import SSENet
from ...core.ssen.resample import SCALE, bicubic_up
from .data import Sample, make_lr
from .heldout import summary
from .metrics import psnr_y, ssim_y
from .references import as_float


def validation_cases(samples: list[Sample]) -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    """Whole-image validation for a folder: (name, lr, hr, refs-by-mode); ``irrelevant`` is the next image."""
    cases = []
    for i, s in enumerate(samples):
        hr = as_float(s.hr[:, : s.hr.shape[1] // SCALE * SCALE, : s.hr.shape[2] // SCALE * SCALE])[None]
        lr = s.lr[None] if s.lr is not None else make_lr(hr)
        other = as_float(samples[(i + 1) % len(samples)].hr) if len(samples) > 1 else torch.flip(hr[0], (-1, -2))
        refs = {"self": None, "oracle": hr, "irrelevant": other[None]}
        if s.refs:
            refs["partner"] = as_float(s.refs[0])[None]
        cases.append((s.name, lr, hr, refs))
    return cases


@torch.no_grad()
def evaluate(model: SSENet, cases, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Y-PSNR / Y-SSIM (border shaved by 4) per image and reference mode, plus bicubic (folder validation)."""
    model.eval()
    res: dict[str, dict[str, float]] = {}
    for name, lr, hr, refs in cases:
        lr, hr = lr.to(device), hr.to(device)
        bic = bicubic_up(lr)
        row = {"bicubic": psnr_y(bic, hr)}
        for mode, ref in refs.items():
            sr = model(lr, None if ref is None else ref.to(device)).float()
            row[mode] = psnr_y(sr, hr)
            row[mode + "_ssim"] = ssim_y(sr, hr)
        res[name] = row
    return res


def format_rows(res: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{n}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items() if not k.endswith("_ssim"))
                     for n, r in res.items())


def val_text(res: dict) -> str:
    return summary(res) if "mean" in res else format_rows(res.get("rows", {}))
