"""Inference helpers: batched, tiled ×4 SR with references of any size, the displacement field and its map."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..image import check_finite, match_batch
from ..progress import Progress
from ..tiling import blend_tiles, grid, retry_on_oom
from .match import RADIUS, warp
from .model import SCALE, SSENet

MIN_SIDE = 4
MIN_TILE = 64     # the out-of-memory back-off stops here
REF_MARGIN = RADIUS  # LR px of reference around each tile


def _check(lr: torch.Tensor, what: str = "image") -> None:
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise InputError(f"SSEN needs an RGB {what} batch [B,3,H,W]; got shape {tuple(lr.shape)} "
                         f"(convert grayscale/RGBA to RGB first)")
    if min(lr.shape[-2:]) < MIN_SIDE:
        raise InputError(f"the {what} is {lr.shape[-1]}×{lr.shape[-2]} pixels; SSEN needs at least "
                         f"{MIN_SIDE}×{MIN_SIDE}")
    if lr.shape[0] == 0:
        raise InputError(f"the {what} batch is empty")
    check_finite(lr, what)


def pair_references(lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor | None:
    """References (any size, kept) paired with the images: one for all, or one per image; ``None`` stays None
    (self-similarity)."""
    if ref is None:
        return None
    _check(ref, "reference")
    return match_batch(ref, lr.shape[0], "reference", expand=False).to(lr.dtype)


@torch.no_grad()
def super_resolve(model: SSENet, lr: torch.Tensor, ref: torch.Tensor | None = None, tile: int | None = None,
                  overlap: int = 16, progress: Progress | None = None, margin: int = REF_MARGIN) -> torch.Tensor:
    """×4 SR of ``lr`` ``[B,3,h,w]`` (in [0,1]) with ``ref`` (any size, batch 1 or B, or None) → ``[B,3,4h,4w]``
    clamped to [0,1], on the input's device.

    ``tile`` (LR pixels) runs the network on overlapping tiles, blended with a Gaussian window; an image that fits
    in one tile is processed whole (exactly the untiled result). The parameter-free match (coarse displacement and
    similarity gate) runs once on the whole image, so every tile reads the whole image's displacement; each tile
    gets the reference window around it grown by ``margin`` LR pixels (default: the match's search radius), so
    content the displacement points to beyond the tile is there."""
    _check(lr)
    p = next(model.parameters())
    dev, dtype = p.device, p.dtype
    out_dev = lr.device
    lr = lr.to(dev, dtype)
    refs = pair_references(lr, None if ref is None else ref.to(dev, dtype))
    b, (h, w) = lr.shape[0], lr.shape[-2:]
    results = []
    for i in range(b):
        lr_i = lr[i:i + 1]
        ref_i = None if refs is None else refs[min(i, refs.shape[0] - 1)][None]

        def sub(done: int, total: int, i: int = i) -> None:
            if progress is not None:
                progress(i * total + done, b * total)

        matched: list = []  # the whole image's match, computed once (not again after an out-of-memory retry)

        def run(t: int | None, lr_i: torch.Tensor = lr_i, ref_i: torch.Tensor | None = ref_i, matched: list = matched
                ) -> torch.Tensor:
            g = grid(h, w, t, overlap)
            if len(g) == 1:
                out = model(lr_i, ref_i)
                sub(1, 1)
                return out
            if not matched:
                matched.append(model.ssen.match(lr_i, ref_i, model.scale_search) if model.ssen is not None else None)
            m = matched[0]

            def part(tl: torch.Tensor, pos: tuple[int, int]) -> torch.Tensor:
                (y, x), (th, tw) = pos, tl.shape[-2:]
                if m is None:
                    return model(tl)
                y0, x0 = max(0, y - margin), max(0, x - margin)
                y1, x1 = min(h, y + th + margin), min(w, x + tw + margin)
                window = m.ref[..., SCALE * y0:SCALE * y1, SCALE * x0:SCALE * x1]
                match = (m.flow[..., y:y + th, x:x + tw], m.gate[..., y:y + th, x:x + tw])
                return model(tl, window, ref_origin=(y - y0, x - x0), match=match)

            return blend_tiles(part, lr_i, g, SCALE, "gaussian", sub).to(lr_i.dtype)

        results.append(retry_on_oom(run, tile, max(h, w), MIN_TILE).clamp(0, 1))
    return torch.cat(results).to(out_dev)


def _traced(model: SSENet, lr: torch.Tensor, ref: torch.Tensor | None):
    """The model's trace on ``lr`` with ``ref``, the whole image's :class:`.model.Match`, and ``lr`` and the paired
    references (native size, or None) on the model's device and dtype."""
    if model.ssen is None:
        raise InputError("this SSEN network has no reference branch")
    _check(lr)
    p = next(model.parameters())
    lr = lr.to(p.device, p.dtype)
    refs = pair_references(lr, None if ref is None else ref.to(p.device, p.dtype))
    m = model.ssen.match(lr, refs, model.scale_search)
    _, trace = model(lr, m.ref, return_offsets=True, ref_origin=(0, 0), match=(m.flow, m.gate))
    # in the reference resized to the output's frame: the displacement composed with the alignment already inside
    # the matched reference (for a frame-only match that part is zero and ``flow`` is in the displacement)
    disp = trace["displacement"].float()
    trace["displacement"] = disp + warp(m.inside.float(), disp)
    return trace, m, lr, refs


@torch.no_grad()
def displacement(model: SSENet, lr: torch.Tensor, ref: torch.Tensor | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Where each LR pixel's content is read from in the matched reference, and how much the reference is used.

    Returns ``(disp, weight)``: ``disp`` ``[B,2,h,w]`` (dy, dx) in LR pixels in the reference resized to
    ``4h × 4w`` — the match (scale/rotation candidate and displacement search) composed with the mean
    displacement of each of the three deformable layers (:func:`compose_displacement`), i.e. the field the
    aligned reference detail is sampled with; ``weight``
    ``[B,1,h,w]`` in [0, 1] — the detail weight (learned similarity × the parameter-free similarity gate). A
    reference whose content lies ``s`` LR pixels further right/down gives ``disp ≈ (s, s)``."""
    trace = _traced(model, lr, ref)[0]
    return trace["displacement"], (trace["detail_weight"] * trace["gate"]).float()


def scale_colours(zoom: torch.Tensor, used: torch.Tensor) -> torch.Tensor:
    """``[B,3,h,w]``: the chosen scale per position — blue 0.5×, white 1×, red 2× (log scale) — grey where the
    reference is not used (``used`` < 0.05)."""
    t = (torch.log2(zoom.clamp(0.25, 4)) / 1.0).clamp(-1, 1)
    r = torch.where(t > 0, torch.ones_like(t), 1 + t)
    b = torch.where(t < 0, torch.ones_like(t), 1 - t)
    g = 1 - t.abs()
    col = torch.cat((r, g, b), 1)
    return torch.where(used >= 0.05, col, torch.full_like(col, 0.35))


@torch.no_grad()
def offset_map(model: SSENet, lr: torch.Tensor, ref: torch.Tensor | None = None, step: int = 8,
               with_scale: bool = False) -> tuple[torch.Tensor, ...]:
    """Where the alignment reads the reference (the paper's Fig. 7), and at which scale.

    Returns ``(points, similarity)`` — and ``scale`` with ``with_scale`` — each ``[B,3,4h,4w]`` in [0,1]:

    * ``points``: the reference resized to ``4h × 4w`` (dimmed); for every ``step``-th LR pixel a white dot
      at the pixel itself, a line of dots to where its content is read (:func:`displacement`) and the 3×3
      footprint there, coloured by the detail weight (green = used, red = gated off).
    * ``similarity``: the detail weight as a heat map (bright = the reference is used there).
    * ``scale``: the reference scale chosen per region by the scale search (:func:`scale_colours`: blue 0.5×,
      white 1×, red 2×; grey where the reference is not used) over the dimmed reference.
    """
    trace, matched, lr_m, paired = _traced(model, lr, ref)
    disp = trace["displacement"].cpu()
    weight = (trace["detail_weight"] * trace["gate"]).float().cpu()
    # the reference resized to the output's frame (self-similarity: the match's own bicubic frame)
    refs = (matched.ref if paired is None else SSENet.prepare_reference(lr_m, paired)).float().cpu()
    b, _, h, w = lr.shape
    canvas = refs.clone() * 0.45
    H, W = SCALE * h, SCALE * w

    def dot(bi: int, y: float, x: float, colour: torch.Tensor) -> None:
        yi, xi = round(y), round(x)
        y0, y1, x0, x1 = max(yi - 1, 0), min(yi + 2, H), max(xi - 1, 0), min(xi + 2, W)
        if y0 < y1 and x0 < x1:
            canvas[bi, :, y0:y1, x0:x1] = colour.view(3, 1, 1)

    white = torch.ones(3)
    for bi in range(b):
        for yy in range(step // 2, h, step):
            for xx in range(step // 2, w, step):
                dy, dx = float(disp[bi, 0, yy, xx]), float(disp[bi, 1, yy, xx])
                m = float(weight[bi, 0, yy, xx])
                colour = torch.tensor([1 - m, m, 0.1])
                cy, cx = SCALE * yy + 1.5, SCALE * xx + 1.5
                for t in (0.25, 0.5, 0.75):
                    dot(bi, cy + SCALE * dy * t, cx + SCALE * dx * t, colour * 0.6)
                for ky in (-1, 0, 1):
                    for kx in (-1, 0, 1):
                        dot(bi, cy + SCALE * (dy + ky), cx + SCALE * (dx + kx), colour)
                dot(bi, cy, cx, white)
    sim = F.interpolate(weight, scale_factor=SCALE, mode="nearest")
    heat = torch.cat((sim, sim ** 2, 1 - sim), 1) * 0.7 + 0.3 * refs.mean(1, keepdim=True)
    if not with_scale:
        return canvas.clamp(0, 1), heat.clamp(0, 1)
    zoom = F.interpolate(scale_colours(matched.zoom.float().cpu(), weight), scale_factor=SCALE, mode="nearest")
    scale = 0.75 * zoom + 0.25 * refs.mean(1, keepdim=True)
    return canvas.clamp(0, 1), heat.clamp(0, 1), scale.clamp(0, 1)
