"""Inference helpers: batched, tiled ×4 SR with references of any size, and the offset visualisation."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..image import match_batch
from ..progress import Progress
from ..tiling import tiled_apply
from .model import SCALE, SSENet

MIN_SIDE = 4


def _check(lr: torch.Tensor, what: str = "image") -> None:
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise InputError(f"SSEN needs an RGB {what} batch [B,3,H,W]; got shape {tuple(lr.shape)} "
                         f"(convert grayscale/RGBA to RGB first)")
    if min(lr.shape[-2:]) < MIN_SIDE:
        raise InputError(f"the {what} is {lr.shape[-1]}×{lr.shape[-2]} pixels; SSEN needs at least "
                         f"{MIN_SIDE}×{MIN_SIDE}")


def pair_references(lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
    """References resized to ``4h × 4w`` and paired with the images: one for all, or one per image.
    ``None`` gives the self-similarity reference (the bicubic ×4 upsampling of each image)."""
    if ref is not None:
        _check(ref, "reference")
        ref = match_batch(ref, lr.shape[0], "reference", expand=False)
    return SSENet.prepare_reference(lr, ref)


@torch.no_grad()
def super_resolve(model: SSENet, lr: torch.Tensor, ref: torch.Tensor | None = None, tile: int | None = None,
                  overlap: int = 16, progress: Progress | None = None) -> torch.Tensor:
    """×4 SR of ``lr`` ``[B,3,h,w]`` (in [0,1]) with ``ref`` (any size, batch 1 or B, or None) → ``[B,3,4h,4w]``
    clamped to [0,1], on the input's device. ``tile`` (LR pixels) processes overlapping tiles; the reference is
    tiled with the image (its tile is the matching 4× window)."""
    _check(lr)
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    out_dev = lr.device
    lr = lr.to(dev, dtype)
    refs = pair_references(lr, None if ref is None else ref.to(dev, dtype))
    b = lr.shape[0]
    results = []
    for i in range(b):
        packed = torch.cat((lr[i:i + 1], F.pixel_unshuffle(refs[i:i + 1], SCALE)), 1)

        def fn(t: torch.Tensor) -> torch.Tensor:
            return model(t[:, :3], F.pixel_shuffle(t[:, 3:], SCALE))

        def sub(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, b * total)

        results.append(tiled_apply(fn, packed, tile, overlap, scale=SCALE, progress=sub).clamp(0, 1))
    return torch.cat(results).to(out_dev)


def _hsv_wheel(angle: torch.Tensor) -> torch.Tensor:
    """Hue (radians) → RGB on ``[...]`` giving ``[..., 3]``."""
    h = (angle / (2 * torch.pi)) % 1.0 * 6
    k = torch.stack([(5 + h) % 6, (3 + h) % 6, (1 + h) % 6], -1)
    return 1 - torch.clamp(torch.minimum(k, 4 - k), 0, 1)


@torch.no_grad()
def offset_map(model: SSENet, lr: torch.Tensor, ref: torch.Tensor | None = None, step: int = 8,
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where the deformable sampling points land in the reference (the paper's Fig. 7).

    Returns ``(points, similarity)``, both ``[B,3,4h,4w]`` in [0,1]:

    * ``points``: the reference (at 4× the image size, dimmed); for every ``step``-th LR pixel the 9 sampling
      points of the last deformable layer, displaced by the offsets of all three layers (summed, averaged over
      offset groups — an approximation of the composed sampling position), drawn as dots coloured by the
      modulation mask (green = similar, red = gated off); a white dot marks the undeformed position.
    * ``similarity``: the modulation mask averaged over layers, taps and groups, as a heat map (bright = the
      reference is used there).
    """
    if model.ssen is None:
        raise InputError("this SSEN network has no reference branch")
    _check(lr)
    p = next(model.parameters())
    lr = lr.to(p.device, p.dtype)
    refs = pair_references(lr, None if ref is None else ref.to(p.device, p.dtype))
    _, trace = model(lr, refs, return_offsets=True)
    b, _, h, w = lr.shape
    taps = 9
    offs = [o.view(b, -1, taps, 2, h, w).float().mean(1) for o, _ in trace]  # [B, 9, 2, h, w]
    masks = [m.view(b, -1, taps, h, w).float().mean(1) for _, m in trace]    # [B, 9, h, w]
    total = sum(offs[1:], offs[0])
    last_mask = masks[-1]
    canvas = refs.float().clone().cpu() * 0.45
    ky = torch.arange(3).repeat_interleave(3) - 1
    kx = torch.arange(3).repeat(3) - 1
    H, W = SCALE * h, SCALE * w

    def dot(bi: int, y: float, x: float, colour: torch.Tensor) -> None:
        yi, xi = int(round(y)), int(round(x))
        y0, y1, x0, x1 = max(yi - 1, 0), min(yi + 2, H), max(xi - 1, 0), min(xi + 2, W)
        if y0 < y1 and x0 < x1:
            canvas[bi, :, y0:y1, x0:x1] = colour.view(3, 1, 1)

    white = torch.ones(3)
    for bi in range(b):
        for yy in range(step // 2, h, step):
            for xx in range(step // 2, w, step):
                for k in range(taps):
                    dy = float(total[bi, k, 0, yy, xx]) + float(ky[k])
                    dx = float(total[bi, k, 1, yy, xx]) + float(kx[k])
                    m = float(last_mask[bi, k, yy, xx])
                    dot(bi, SCALE * (yy + dy) + 1.5, SCALE * (xx + dx) + 1.5, torch.tensor([1 - m, m, 0.1]))
                dot(bi, SCALE * yy + 1.5, SCALE * xx + 1.5, white)
    sim = torch.stack(masks).mean((0, 2))[:, None]  # [B,1,h,w]
    sim = F.interpolate(sim, scale_factor=SCALE, mode="nearest").cpu()
    heat = torch.cat((sim, sim ** 2, 1 - sim), 1) * 0.7 + 0.3 * refs.float().cpu().mean(1, keepdim=True)
    return canvas.clamp(0, 1), heat.clamp(0, 1)
