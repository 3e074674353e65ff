"""Parameter-free coarse matching: where the input's content lies in the reference, in LR pixels.

:func:`coarse_flow` compares the luma of the input with the luma of the reference brought to the input's scale
(the same antialiased bicubic ×4 down as the degradation) by zero-mean normalised cross-correlation (NCC). It is a
full search over every integer displacement within ±``radius`` LR pixels (default 16, i.e. ±64 output pixels);
the cost of a displacement is the mean of the NCC over 7×7 windows and the NCC of 3×3-box-blurred copies over
13×13 windows (a coarser, wider context that keeps periodic structure from matching a period off). Displacements
whose target pixel leaves the reference score -1; a small penalty per pixel of displacement breaks ties (flat
areas, self-similarity) towards zero; the integer field is median-filtered (3×3) and refined to sub-pixel
precision by a parabola through the costs of the four neighbouring displacements.

A global affine field fitted (weighted least squares) to the confident matches replaces the local estimate
wherever it matches better: a shifted, zoomed or slightly rotated reference is then followed exactly, and a
reference with parallax (a stereo partner) keeps its local field.

Returns ``flow`` ``[B,2,h,w]`` (dy, dx: input pixel ``p`` is found at ``p + flow(p)`` in the reference) and the
7×7 NCC after warping. No parameters and no gradient: the learned deformable layers refine it. Memory is
O(h·w) per displacement row (the cost volume is never stored).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError

EPS = (2.0 / 255) ** 2  # variance floor: flat windows correlate with nothing
LUMA = (0.299, 0.587, 0.114)
RADIUS = 16             # search range, LR pixels
WINDOW, WINDOW_COARSE = 7, 13
TIE = 0.002             # cost penalty per LR pixel of displacement


def luma(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor(LUMA, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def box(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over k×k windows (k odd), windows cut at the border."""
    return F.avg_pool2d(x, k, 1, k // 2, count_include_pad=False)


def _stats(a: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    ma = box(a, k)
    return ma, (box(a * a, k) - ma * ma).clamp_min(0)


def ncc(a: torch.Tensor, b: torch.Tensor, k: int = WINDOW) -> torch.Tensor:
    """Local zero-mean NCC of single-channel maps over k×k windows, with the variance floor EPS."""
    ma, va = _stats(a, k)
    mb, vb = _stats(b, k)
    cov = box(a * b, k) - ma * mb
    return cov / torch.sqrt((va + EPS) * (vb + EPS))


def base_grid(h: int, w: int, device, dtype) -> torch.Tensor:
    y = torch.arange(h, device=device, dtype=dtype).view(1, h, 1).expand(1, h, w)
    x = torch.arange(w, device=device, dtype=dtype).view(1, 1, w).expand(1, h, w)
    return torch.stack((y, x), 1)  # [1,2,h,w]


def warp(x: torch.Tensor, flow: torch.Tensor, mode: str = "bilinear", origin: tuple[int, int] | None = None
         ) -> torch.Tensor:
    """``x`` sampled at ``p + flow(p)`` (pixel units), edges replicated. ``flow`` has ``x``'s size, or, with
    ``origin`` = (oy, ox), ``x`` is a larger window in which the flow's pixel (0, 0) sits at ``origin`` (a tile's
    reference with a margin): then ``x`` is sampled at ``origin + p + flow(p)``."""
    h, w = flow.shape[-2:]
    hx, wx = x.shape[-2:]
    if origin is None:
        if (hx, wx) != (h, w):
            raise InputError(f"warp: image {(hx, wx)} and flow {(h, w)} differ in size")
        origin = (0, 0)
    # positions and sampling in float32 at least (bf16 cannot address pixels beyond 256 exactly)
    dt = torch.promote_types(torch.promote_types(x.dtype, flow.dtype), torch.float32)
    pos = base_grid(h, w, flow.device, dt) + flow.to(dt)
    if origin != (0, 0):
        pos = pos + torch.tensor(origin, device=flow.device, dtype=dt).view(1, 2, 1, 1)
    grid = torch.stack(((2 * pos[:, 1] + 1) / wx - 1, (2 * pos[:, 0] + 1) / hx - 1), -1)  # pixel centres
    return F.grid_sample(x.to(dt), grid, mode=mode, padding_mode="border", align_corners=False).to(x.dtype)


def _median3(x: torch.Tensor) -> torch.Tensor:
    b, c, h, w = x.shape
    p = F.pad(x, (1, 1, 1, 1), mode="replicate")
    return p.unfold(2, 3, 1).unfold(3, 3, 1).reshape(b, c, h, w, 9).median(-1).values


def _box_valid(x: torch.Tensor, k: int) -> torch.Tensor:
    """Mean over every k×k window lying inside ``x`` (each side shrinks by k - 1), via running sums."""
    c = F.pad(x.contiguous(), (1, 0, 1, 0)).cumsum(-1)
    c = c[..., k:] - c[..., :-k]
    c = c.cumsum(-2)
    return (c[..., k:, :] - c[..., :-k, :]) / (k * k)


def _channels(a: torch.Tensor, b: torch.Tensor) -> tuple[tuple[torch.Tensor, torch.Tensor, int], ...]:
    return (a, b, WINDOW), (box(a, 3), box(b, 3), WINDOW_COARSE)


def _cost_at(a: torch.Tensor, b: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """The matching cost of the (per-pixel, integer) displacement field ``d``."""
    h, w = a.shape[-2:]
    cost = sum(ncc(ai, warp(bi, d), ki) for ai, bi, ki in _channels(a, b)) / 2
    pos = base_grid(h, w, a.device, a.dtype) + d
    inside = (pos[:, :1] >= 0) & (pos[:, :1] <= h - 1) & (pos[:, 1:] >= 0) & (pos[:, 1:] <= w - 1)
    return torch.where(inside, cost, torch.full_like(cost, -1.0))


@torch.no_grad()
def coarse_flow(lr: torch.Tensor, ref_lr: torch.Tensor, radius: int = RADIUS) -> tuple[torch.Tensor, torch.Tensor]:
    """See the module docstring. ``lr`` and ``ref_lr`` are ``[B,3,h,w]`` (same size)."""
    if lr.shape[-2:] != ref_lr.shape[-2:]:
        raise InputError(f"coarse_flow: input {tuple(lr.shape[-2:])} and reference {tuple(ref_lr.shape[-2:])} "
                         "differ in size")
    a, b = luma(lr.float()), luma(ref_lr.float())
    off = 0.5 * (a.mean() + b.mean())
    a, b = a - off, b - off  # smaller magnitudes keep the running sums precise
    bsz, _, h, w = a.shape
    r, n = radius, 2 * radius + 1
    chans = []
    for ai, bi, ki in _channels(a, b):
        q = ki // 2
        A = F.pad(ai, (q, q, q, q), mode="replicate")
        Bp = F.pad(bi, (q + r,) * 4, mode="replicate")
        ma = _box_valid(A, ki)
        da = torch.sqrt((_box_valid(A * A, ki) - ma * ma).clamp_min(0) + EPS)
        mb = _box_valid(Bp, ki)  # [B,1,h+2r,w+2r]
        db = torch.sqrt((_box_valid(Bp * Bp, ki) - mb * mb).clamp_min(0) + EPS)
        chans.append((A, Bp, ki, ma, da, mb, db))
    ys = torch.arange(h, device=a.device).view(1, 1, h, 1)
    xs = torch.arange(w, device=a.device).view(1, 1, 1, w)
    dxi = torch.arange(-r, r + 1, device=a.device).view(1, n, 1, 1)
    pen_dx = TIE * dxi.abs().to(a.dtype)
    best = torch.full((bsz, 1, h, w), -9.0, device=a.device, dtype=a.dtype)
    best_i = torch.zeros((bsz, 1, h, w), dtype=torch.long, device=a.device)

    def rows(t: torch.Tensor, dy: int, hh: int, ww: int) -> torch.Tensor:
        """``t`` (padded by r) displaced by (dy, dx) for every dx: ``[B, n, hh, ww]``."""
        return t[:, 0, r + dy:r + dy + hh, :].unfold(2, ww, 1).permute(0, 2, 1, 3)

    for dy in range(-r, r + 1):
        cost = 0
        for A, Bp, ki, ma, da, mb, db in chans:
            hh, ww = A.shape[-2:]
            e_ab = _box_valid(A * rows(Bp, dy, hh, ww), ki)
            cost = cost + (e_ab - ma * rows(mb, dy, h, w)) / (da * rows(db, dy, h, w))
        cost = cost / len(chans)
        inside = ((ys + dy >= 0) & (ys + dy < h)) & ((xs + dxi >= 0) & (xs + dxi < w))
        cost = torch.where(inside, cost, torch.full_like(cost, -1.0))
        v, i = (cost - pen_dx - TIE * abs(dy)).max(1, keepdim=True)
        better = v > best
        best = torch.where(better, v, best)
        best_i = torch.where(better, (dy + r) * n + i, best_i)
    bd = _median3(torch.cat((best_i // n - r, best_i % n - r), 1).to(a.dtype))
    s0 = _cost_at(a, b, bd)
    sub = []
    for e in ((1.0, 0.0), (0.0, 1.0)):
        step = torch.tensor(e, device=a.device, dtype=a.dtype).view(1, 2, 1, 1)
        sp, sm = _cost_at(a, b, bd + step), _cost_at(a, b, bd - step)
        den = sm - 2 * s0 + sp
        ok = den < -1e-6
        delta = torch.where(ok, 0.5 * (sm - sp) / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
        sub.append(delta.clamp(-0.5, 0.5))
    flow = bd + torch.cat(sub, 1)
    score = ncc(a, warp(b, flow))
    # a global affine field fitted to the confident matches: exact for a shifted, zoomed or rotated reference,
    # where local windows match a zoomed texture only roughly; kept per pixel where it matches better
    aff = affine_fit(flow, (score - 0.5).clamp_min(0))
    aff_score = ncc(a, warp(b, aff))
    better = aff_score > score
    return torch.where(better, aff, flow), torch.where(better, aff_score, score)


def affine_fit(flow: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The field ``A p + t`` closest to ``flow`` ``[B,2,h,w]`` in weighted least squares (per image); the zero
    field where the weights carry no information."""
    bsz, _, h, w = flow.shape
    pos = base_grid(h, w, flow.device, flow.dtype).expand(bsz, -1, -1, -1)
    cy, cx = (h - 1) / 2, (w - 1) / 2
    design = torch.stack((pos[:, 0] - cy, pos[:, 1] - cx, torch.ones_like(pos[:, 0])), -1).view(bsz, -1, 3)
    wt = weight.view(bsz, -1, 1)
    lhs = design.transpose(1, 2) @ (wt * design) + 1e-3 * torch.eye(3, device=flow.device, dtype=flow.dtype)
    rhs = design.transpose(1, 2) @ (wt * flow.view(bsz, 2, -1).transpose(1, 2))  # [B,3,2]
    coef = torch.linalg.solve(lhs, rhs)
    out = (design @ coef).transpose(1, 2).reshape(bsz, 2, h, w)
    ok = (wt.sum(1) > 10).view(bsz, 1, 1, 1)
    return torch.where(ok, out, torch.zeros_like(out))
