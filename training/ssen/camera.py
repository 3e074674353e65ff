"""A second photograph of a scene: the reference SSEN's users have — another zoom, another moment, another
camera — never pixel-identical to the ground truth.

``rephotograph`` renders a window of a scene image (at twice the ground truth's resolution, so a 2× zoom still
has real detail) through a similarity transform (zoom, small rotation, position), then a simple camera model:
lens blur (Gaussian), optional linear motion blur, signal-dependent noise (shot + read) and JPEG compression.
Deterministic for a given seed.
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F


def _gauss_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    if sigma <= 0.05:
        return x
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _motion_blur(x: torch.Tensor, length: float, angle: float) -> torch.Tensor:
    if length < 1:
        return x
    n = math.ceil(length) * 2 + 1
    t = torch.linspace(-length / 2, length / 2, n)
    dy, dx = t * math.sin(angle), t * math.cos(angle)
    h, w = x.shape[-2:]
    out = 0
    for yy, xx in zip(dy.tolist(), dx.tolist()):
        theta = torch.tensor([[1, 0, 2 * xx / w], [0, 1, 2 * yy / h]], dtype=x.dtype)[None]
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = out + F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out / n


def jpeg(x: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    a = (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    b = np.asarray(Image.open(buf).convert("RGB")).copy()
    return torch.from_numpy(b).permute(2, 0, 1)[None].float() / 255


def rephotograph(scene: torch.Tensor, centre: tuple[float, float], side: tuple[int, int], zoom: float,
                 angle: float = 0.0, seed: int = 0, scene_per_hr: float = 2.0, blur: float = 0.5,
                 motion: float = 0.0, noise: float = 0.01, quality: int = 90) -> torch.Tensor:
    """``[1,3,h,w]``: the scene ``[3,H,W]`` photographed around ``centre`` (ground-truth px) at ``zoom`` output px
    per ground-truth px, rotated by ``angle`` degrees, covering ``side`` (h, w) ground-truth px; the scene has
    ``scene_per_hr`` px per ground-truth px. Then lens blur σ ``blur`` output px, motion blur of ``motion`` px,
    noise (σ² = noise² · (0.2 + value)) and JPEG ``quality``."""
    g = torch.Generator().manual_seed(seed)
    hs, ws = side
    out_h, out_w = max(8, round(hs * zoom)), max(8, round(ws * zoom))
    # sample the scene on a grid that is `step` scene px per output px: at least 1 (render at ≥ the output's
    # resolution, then antialias down)
    step = scene_per_hr / zoom
    over = max(1.0, step)
    gh, gw = round(out_h * step / over), round(out_w * step / over)
    yy = (torch.arange(gh, dtype=torch.float32) + 0.5 - gh / 2) * over
    xx = (torch.arange(gw, dtype=torch.float32) + 0.5 - gw / 2) * over
    Y, X = torch.meshgrid(yy, xx, indexing="ij")
    a = math.radians(angle)
    cy, cx = centre[0] * scene_per_hr, centre[1] * scene_per_hr
    sy = cy + math.cos(a) * Y - math.sin(a) * X
    sx = cx + math.sin(a) * Y + math.cos(a) * X
    H, W = scene.shape[-2:]
    grid = torch.stack((2 * sx / W - 1, 2 * sy / H - 1), -1)[None]  # continuous coords, pixel i covers [i, i+1)
    img = F.grid_sample(scene[None].float(), grid, mode="bicubic", padding_mode="border", align_corners=False)
    img = F.interpolate(img, size=(out_h, out_w), mode="bicubic", align_corners=False, antialias=True)
    return camera(img, g, blur, motion, noise, quality)


def camera(img: torch.Tensor, g: torch.Generator, blur: float = 0.5, motion: float = 0.0, noise: float = 0.01,
           quality: int = 90) -> torch.Tensor:
    """The camera model on an image ``[1,3,h,w]`` in [0,1]: lens blur σ ``blur`` px, linear motion blur of
    ``motion`` px in a random direction, noise (σ² = noise² · (0.2 + value)) and JPEG ``quality`` (0: none)."""
    img = _gauss_blur(img, blur)
    img = _motion_blur(img, motion, float(torch.rand(1, generator=g)) * math.pi)
    img = img.clamp(0, 1)
    if noise > 0:
        img = img + torch.randn(img.shape, generator=g) * noise * torch.sqrt(0.2 + img)
    return jpeg(img.clamp(0, 1), quality) if quality else img.clamp(0, 1)
