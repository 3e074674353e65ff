"""Reference synthesis for SSEN training: views of a photo through a similarity transform, another exposure,
another camera, and the displacement fields of the augmentations."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .data import augment


def randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def rand(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def as_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def view(img: torch.Tensor, cy: float, cx: float, size: int, scale: float, angle: float) -> torch.Tensor:
    """A ``size²`` view of ``img`` ``[3,H,W]`` centred at (cy, cx) (continuous coordinates, pixel centres at +0.5),
    on a grid rotated by ``angle`` (radians) with a spacing of ``scale`` source pixels (bicubic; a Gaussian
    pre-blur when shrinking; edges replicated)."""
    H, W = img.shape[-2:]
    half = math.ceil(size * scale * 0.75) + 4  # a local region holds the whole rotated grid
    y0, x0 = int(cy) - half, int(cx) - half
    pad = (max(0, -x0), max(0, x0 + 2 * half - W), max(0, -y0), max(0, y0 + 2 * half - H))
    reg = as_float(img[:, max(0, y0):min(H, y0 + 2 * half), max(0, x0):min(W, x0 + 2 * half)])[None]
    if any(pad):
        reg = F.pad(reg, pad, mode="replicate")
    rh, rw = reg.shape[-2:]
    t = (torch.arange(size, dtype=torch.float32) + 0.5 - size / 2) * scale
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    c, s = math.cos(angle), math.sin(angle)
    py = (cy - y0) + c * yy + s * xx
    px = (cx - x0) - s * yy + c * xx
    grid = torch.stack((2 * px / rw - 1, 2 * py / rh - 1), -1)[None]
    if scale > 1.05:
        reg = blur(reg, 0.5 * math.sqrt(scale ** 2 - 1), 2)
    return F.grid_sample(reg, grid, mode="bicubic", padding_mode="border", align_corners=False)[0].clamp(0, 1)


def blur(x: torch.Tensor, sigma: float, r: int) -> torch.Tensor:
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    n = 2 * r + 1
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), (k[:, None] * k[None, :]).expand(3, 1, n, n), groups=3)


def jitter(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Another exposure / white balance: per-channel gain ±12 %, offset ±0.05, sometimes a gamma 0.8–1.25."""
    gain = torch.tensor([rand(g, 1 - 0.12 * strength, 1 + 0.12 * strength) for _ in range(3)]).view(3, 1, 1)
    y = x * gain + rand(g, -0.05, 0.05) * strength
    if rand(g) < 0.3:
        y = y.clamp(0, 1) ** rand(g, 0.8, 1.25)
    return y.clamp(0, 1)


def degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Another camera: sometimes a slight blur (σ 0.3–1 px), sometimes noise (σ 0.003–0.015)."""
    if rand(g) < 0.25:
        x = blur(x[None], rand(g, 0.3, 1.0), 3)[0]
    if rand(g) < 0.25:
        x = x + torch.randn(x.shape, generator=g) * rand(g, 0.003, 0.015)
    return x.clamp(0, 1)


def aug_matrix(k: int, flip: bool, n: int = 8) -> torch.Tensor:
    """``M`` with ``d' = M d`` for a displacement field under ``augment(., k, flip)``, from index maps."""
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="ij")
    src = augment(torch.stack((yy, xx)), k, flip)  # where every augmented pixel came from
    jac = torch.tensor([[float(src[0, 1, 0] - src[0, 0, 0]), float(src[0, 0, 1] - src[0, 0, 0])],
                        [float(src[1, 1, 0] - src[1, 0, 0]), float(src[1, 0, 1] - src[1, 0, 0])]])
    return torch.linalg.inv(jac)


def aug_field(d: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.einsum("ij,jhw->ihw", aug_matrix(k, flip), augment(d, k, flip))
