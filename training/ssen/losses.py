"""SSEN training losses: Charbonnier on the output and the error energy at the 4-pixel-period grid frequencies."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ...core.ssen.match import luma


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Per-sample Charbonnier loss ``[B]``: the mean of ``sqrt((x − y)² + eps²)`` over each sample."""
    return torch.sqrt((x - y) ** 2 + eps * eps).mean(tuple(range(1, x.ndim)))


def harm(sr: torch.Tensor, sr_self: torch.Tensor, hr: torch.Tensor, region: int = 8, eps: float = 1e-3
         ) -> torch.Tensor:
    """How much worse than self-similarity (``sr_self``, no gradient) the output with a reference is: the mean over
    ``region``² HR-px regions of the positive part of (Charbonnier error with the reference − without), so a
    reference may help, and where it cannot, the network learns to leave it alone rather than to average."""
    def err(x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(torch.sqrt((x - hr) ** 2 + eps * eps).mean(1, keepdim=True), region)

    return (err(sr) - err(sr_self.detach())).clamp_min(0).mean()


def grid_energy(err: torch.Tensor) -> torch.Tensor:
    """Mean luma error energy at the 15 period-4 / period-2 grid frequencies (the bins of
    :func:`.metrics.grid_ratio`), Parseval-normalised so that a white error of variance v scores v. The pixel loss
    alone spends almost nothing on these 15 of H·W bins; this term makes a checkerboard cost what it looks like."""
    y = luma(err)[:, 0].float()
    h, w = y.shape[-2:]
    p = torch.fft.fft2(y).abs() ** 2 / (h * w)
    iy = torch.tensor([0, h // 4, h // 2, 3 * h // 4], device=y.device)
    ix = torch.tensor([0, w // 4, w // 2, 3 * w // 4], device=y.device)
    g = p[:, iy[:, None], ix[None, :]].flatten(1)[:, 1:]  # without (0, 0)
    return g.mean()
