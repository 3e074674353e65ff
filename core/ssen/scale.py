"""Scale- and rotation-aware parameter-free matching: a reference of any size, zoom and small rotation is
brought onto the output's grid before the network sees it.

1. **Global search, coarse to fine** (:func:`global_candidates`): the input's luma, shrunk so that its long side is
   at most ``COARSE_SIDE`` px, is matched against the reference's luma rescaled to every scale in ``SCALES``
   (reference pixels per output pixel, 0.5×–2× in steps of 2^¼) and rotated by every angle in ``ANGLES``, by
   masked zero-mean NCC over every translation (FFT; partial overlap down to ``MIN_OVERLAP`` of the template
   counts), for the whole input and for each of its four quadrants (a region may sit at another scale or place
   than the rest). The best (scale, angle) of each template is refined by 2^±⅛ and ±``ANGLE_STEP``/2. Every
   transform whose masked NCC reaches ``MIN_SCORE`` is a candidate (duplicates and transforms close to plain
   resizing merged; at most ``MAX_CANDIDATES``).
2. **Local search per candidate**: the reference sampled through the candidate transform onto the output grid
   (antialiased when the candidate shrinks it), then the ±16 LR px displacement search of :mod:`.match` on it.
   The reference resized to the output's frame (the behaviour without scale search) is always candidate 0.
3. **Per region**: every LR position takes the candidate whose 9×9-smoothed match NCC is highest (the candidate
   with the highest mean NCC over the whole image wins ties within ``KEEP_BEST``); the aligned reference is sampled from the (prefiltered) reference once,
   along the candidate's transform composed with its local displacement. The similarity gate then judges the
   rescaled, aligned reference, exactly as it judges a plain one.

Memory: the global search works on ≤ ``COARSE_SIDE``-px images (the reference is cropped to the part a
candidate maps onto the output before it is prefiltered), so besides one copy of the reference it costs
O(candidates × output pixels), never O(reference pixels × scales).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .match import RADIUS, box, coarse_flow, luma
from .resample import SCALE, bicubic_downscale, resize_bicubic

SCALES = tuple(2 ** (k / 4) for k in range(-4, 5))  # reference px per output px
ANGLES = (-6.0, 0.0, 6.0)    # degrees
ANGLE_STEP = 6.0
COARSE_SIDE = 64              # long side of the input in the global search (px)
MIN_OVERLAP = 0.5             # least overlap of a template with the reference in the global search
MIN_SCORE = 0.5               # least masked NCC of a global candidate
MAX_CANDIDATES = 3            # global candidates besides the plain resize
WHOLE_GOOD = 0.8              # a whole-input match this good skips the per-quadrant search
KEEP_BEST = 0.05              # score margin another candidate needs over the globally best one, per region
SMOOTH = 9                    # the per-region choice compares 9×9 means of the match NCC
FILL = 0.5                    # value outside the reference (flat: correlates with nothing)


@dataclass
class Candidate:
    """HR output position ``U`` (continuous, pixel i covers [i, i+1)) maps to reference position ``M U + b``."""
    M: torch.Tensor   # [2,2] (y, x)
    b: torch.Tensor   # [2]
    score: float

    @property
    def zoom(self) -> float:
        return float(abs(torch.det(self.M)) ** 0.5)

    @property
    def angle(self) -> float:
        """Degrees by which the reference's camera is rotated against the input's (the map itself turns by the
        opposite angle)."""
        return -math.degrees(math.atan2(float(self.M[1, 0] - self.M[0, 1]), float(self.M[0, 0] + self.M[1, 1])))


def _gray(x: torch.Tensor) -> torch.Tensor:
    return luma(x.float())


def _shrink(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    size = (max(1, size[0]), max(1, size[1]))
    return resize_bicubic(x, size, antialias=size[0] < x.shape[-2] or size[1] < x.shape[-1])


def _centres(h: int, w: int, device) -> torch.Tensor:
    y = torch.arange(h, device=device, dtype=torch.float32) + 0.5
    x = torch.arange(w, device=device, dtype=torch.float32) + 0.5
    return torch.stack(torch.meshgrid(y, x, indexing="ij"), 0)  # [2,h,w] continuous centres


def _sample(img: torch.Tensor, pos: torch.Tensor, mode: str = "bicubic") -> tuple[torch.Tensor, torch.Tensor]:
    """``img`` [1,C,H,W] at continuous positions ``pos`` [2,h,w] (y, x); zero outside, and the inside mask."""
    H, W = img.shape[-2:]
    grid = torch.stack((2 * pos[1] / W - 1, 2 * pos[0] / H - 1), -1)[None]
    out = F.grid_sample(img, grid, mode=mode, padding_mode="zeros", align_corners=False)
    inside = ((pos[0] >= 0) & (pos[0] <= H) & (pos[1] >= 0) & (pos[1] <= W)).to(img.dtype)[None, None]
    return out, inside


def _rot(deg: float) -> torch.Tensor:
    a = math.radians(deg)
    return torch.tensor([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])


def masked_ncc(img: torch.Tensor, mask: torch.Tensor, tmpls: list[torch.Tensor]) -> list[torch.Tensor]:
    """Zero-mean NCC of each template [h,w] over every placement in ``img`` [H,W] whose valid part (``mask``)
    covers the template at least ``MIN_OVERLAP`` (else -1): maps of shape [H+h0-1, W+w0-1] (``h0, w0`` the
    largest template) indexed circularly by the template's top-left ``t`` (negative ``t`` wraps). One batch of
    FFTs for the image and all templates."""
    H, W = img.shape
    shape = (H + max(t.shape[0] for t in tmpls) - 1, W + max(t.shape[1] for t in tmpls) - 1)
    side = torch.fft.rfft2(torch.stack((mask, img * mask, img * img * mask)), s=shape)  # [3,...]
    tt = []
    for t in tmpls:
        tt += [torch.ones_like(t), t, t * t]
    pads = [F.pad(x, (0, shape[1] - x.shape[1], 0, shape[0] - x.shape[0])) for x in tt]
    tf = torch.fft.rfft2(torch.stack(pads)).conj().view(len(tmpls), 3, *side.shape[-2:])
    m, im, im2 = side[0], side[1], side[2]
    one, t1, t2 = tf[:, 0], tf[:, 1], tf[:, 2]
    prods = torch.stack((m * one, im * one, im2 * one, m * t1, m * t2, im * t1), 1)  # [T,6,...]
    n, si, si2, st, st2, sit = torch.fft.irfft2(prods, s=shape).unbind(1)
    nn_ = n.clamp_min(1.0)
    cov = sit - si * st / nn_
    vi = (si2 - si * si / nn_).clamp_min(0)
    vt = (st2 - st * st / nn_).clamp_min(0)
    eps = n.clamp_min(0) * (2.0 / 255) ** 2
    score = cov / torch.sqrt((vi + eps) * (vt + eps))
    need = torch.tensor([MIN_OVERLAP * t.numel() - 0.5 for t in tmpls], dtype=n.dtype, device=n.device).view(-1, 1, 1)
    score = torch.where(n >= need, score, torch.full_like(score, -1.0))
    return list(score.unbind(0))


def _scaled_rotated(ref_g: torch.Tensor, factor: tuple[float, float], deg: float
                    ) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float], tuple[float, float]]:
    """The reference luma shrunk by ``factor`` (native px per coarse px, per axis) and rotated by ``deg`` about
    its centre: image, mask, the exact per-axis factors and the centre."""
    H, W = ref_g.shape[-2:]
    hs, ws = max(4, round(H / factor[0])), max(4, round(W / factor[1]))
    s = _shrink(ref_g, (hs, ws))
    fy, fx = H / hs, W / ws
    c0 = (hs / 2, ws / 2)
    if deg == 0:
        return s[0, 0], torch.ones_like(s[0, 0]), (fy, fx), c0
    r = _centres(hs, ws, ref_g.device)
    R = _rot(deg).to(r)
    d = torch.stack((r[0] - c0[0], r[1] - c0[1]))
    v = torch.einsum("ij,jhw->ihw", R, d)
    v = torch.stack((v[0] + c0[0], v[1] + c0[1]))
    img, inside = _sample(s, v, "bilinear")
    return img[0, 0], inside[0, 0], (fy, fx), c0


def _transform(fac: tuple[float, float], c0: tuple[float, float], deg: float, q: tuple[float, float],
               t: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """HR position ``U`` → reference position ``S (c0 + R (U / (4 q) + t - c0))`` as ``(M, b)``."""
    S = torch.diag(torch.tensor(fac, dtype=torch.float64))
    R = _rot(deg).double()
    Q = torch.diag(torch.tensor((1 / (SCALE * q[0]), 1 / (SCALE * q[1])), dtype=torch.float64))
    c = torch.tensor(c0, dtype=torch.float64)
    M = S @ R @ Q
    b = S @ (c + R @ (torch.tensor(t, dtype=torch.float64) - c))
    return M.float(), b.float()


@torch.no_grad()
def global_candidates(lr: torch.Tensor, ref: torch.Tensor) -> list[Candidate]:
    """Similarity transforms (scale, angle, translation) under which regions of ``lr`` [1,3,h,w] are found in
    ``ref`` [1,3,H,W] (native size), best first; see the module docstring."""
    h, w = lr.shape[-2:]
    k = max(1.0, max(h, w) / COARSE_SIDE)
    hc, wc = max(4, round(h / k)), max(4, round(w / k))
    a = _shrink(_gray(lr), (hc, wc))[0, 0]
    q = (h / hc, w / wc)  # LR px per coarse px
    ref_g = _gray(ref)
    templates: list[tuple[tuple[int, int], torch.Tensor]] = [((0, 0), a)]
    if min(hc, wc) >= 16:
        hh, hw = hc // 2, wc // 2
        templates += [((y, x), a[y:y + hh, x:x + hw]) for y in (0, hc - hh) for x in (0, wc - hw)]
    cache: dict = {}

    def search(z: float, deg: float, which: list[int]) -> list[tuple[float, tuple | None]]:
        """Best (score, transform) of each template in ``which`` at scale ``z`` and angle ``deg``."""
        key = (round(z, 4), round(deg, 3))
        if key not in cache:
            # native px per coarse px: z native px per HR px × 4 HR px per LR px × q LR px per coarse px
            cache[key] = _scaled_rotated(ref_g, (z * SCALE * q[0], z * SCALE * q[1]), deg)
        img, mask, fac, c0 = cache[key]
        if img.shape[0] < 4 or img.shape[1] < 4:
            return [(-1.0, None)] * len(which)
        maps = masked_ncc(img, mask, [templates[i][1] for i in which])
        out = []
        for i, score in zip(which, maps):
            off = templates[i][0]
            best = int(score.argmax())
            y, x = divmod(best, score.shape[1])
            y = y - score.shape[0] if y > img.shape[0] - 1 else y  # circular index: negative placements
            x = x - score.shape[1] if x > img.shape[1] - 1 else x
            out.append((float(score.view(-1)[best]), _transform(fac, c0, deg, q, (y - off[0], x - off[1]))))
        return out

    def best_of(which: list[int]) -> list[tuple]:
        best = [(-2.0, None, 1.0, 0.0)] * len(which)
        for z in SCALES:
            for deg in ANGLES:
                for j, (s, tr) in enumerate(search(z, deg, which)):
                    if s > best[j][0]:
                        best[j] = (s, tr, z, deg)
        for j, i in enumerate(which):  # refine each template's best scale and angle
            _, _, z0, d0 = best[j]
            for z in (z0 * 2 ** -0.125, z0, z0 * 2 ** 0.125):
                for deg in (d0 - ANGLE_STEP / 2, d0, d0 + ANGLE_STEP / 2):
                    if z == z0 and deg == d0:
                        continue
                    s, tr = search(z, deg, [i])[0]
                    if s > best[j][0]:
                        best[j] = (s, tr, z, deg)
        return best

    results = best_of([0])
    if len(templates) > 1 and results[0][0] < WHOLE_GOOD:  # regions may sit at other scales or places
        results += best_of(list(range(1, len(templates))))
    found = [Candidate(tr[0], tr[1], s) for s, tr, _, _ in results if tr is not None and s >= MIN_SCORE]
    found.sort(key=lambda c: -c.score)
    H, W = ref.shape[-2:]
    frame = Candidate(torch.diag(torch.tensor((H / (SCALE * h), W / (SCALE * w)))), torch.zeros(2), 1.0)
    kept: list[Candidate] = []
    for c in found:
        if not any(_same(c, o, h, w) for o in [frame] + kept):
            kept.append(c)
    return kept[:MAX_CANDIDATES]


def _same(c: Candidate, o: Candidate, h: int, w: int) -> bool:
    """Two transforms that the ±RADIUS local search cannot tell apart: the same scale (8 %) and angle (2°), and
    the output's corners and centre landing within RADIUS/2 LR px of each other."""
    if abs(c.zoom / o.zoom - 1) > 0.08 or abs(c.angle - o.angle) > 2:
        return False
    pts = torch.tensor([[0, 0], [0, SCALE * w], [SCALE * h, 0], [SCALE * h, SCALE * w],
                        [SCALE * h / 2, SCALE * w / 2]], dtype=torch.float32).T
    d = (c.M @ pts + c.b[:, None]) - (o.M @ pts + o.b[:, None])
    return bool((d.norm(dim=0) / (SCALE * c.zoom)).max() < RADIUS / 2)


def _source(ref: torch.Tensor, c: Candidate, h: int, w: int, margin: float
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """The part of ``ref`` that ``c`` maps the output (grown by ``margin`` LR px) onto, prefiltered to the
    output's scale when ``c`` shrinks the reference; with the transform into that crop."""
    H, W = ref.shape[-2:]
    m = SCALE * margin
    pts = torch.tensor([[-m, -m], [-m, SCALE * w + m], [SCALE * h + m, -m], [SCALE * h + m, SCALE * w + m]],
                       dtype=torch.float32).T
    v = c.M @ pts + c.b[:, None]
    y0, y1 = max(0, math.floor(float(v[0].min()))), min(H, math.ceil(float(v[0].max())))
    x0, x1 = max(0, math.floor(float(v[1].min()))), min(W, math.ceil(float(v[1].max())))
    if y1 - y0 < 8 or x1 - x0 < 8:
        return None
    crop = ref[..., y0:y1, x0:x1].float()
    M, b = c.M.clone(), c.b - torch.tensor((y0, x0), dtype=torch.float32)
    z = c.zoom
    if z > 1.1:
        hs, ws = max(1, round((y1 - y0) / z)), max(1, round((x1 - x0) / z))
        fy, fx = (y1 - y0) / hs, (x1 - x0) / ws
        crop = resize_bicubic(crop, (hs, ws), antialias=True)
        D = torch.diag(torch.tensor((1 / fy, 1 / fx)))
        M, b = D @ M, D @ b
    return crop, M, b


def _apply(M: torch.Tensor, b: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,jhw->ihw", M.to(pos), pos) + b.to(pos).view(2, 1, 1)


@torch.no_grad()
def align_candidate(lr: torch.Tensor, ref: torch.Tensor, c: Candidate, radius: int = RADIUS):
    """The reference through candidate ``c``, refined by the local search: ``(aligned [1,3,4h,4w], flow, score,
    inside [1,1,h,w])`` — ``flow`` the local displacement on the candidate's grid (LR px), ``score`` its NCC."""
    h, w = lr.shape[-2:]
    src = _source(ref, c, h, w, radius + 2)
    if src is None:
        return None
    crop, M, b = src
    U = _centres(SCALE * h, SCALE * w, lr.device)
    first, inside = _sample(crop, _apply(M, b, U))
    first = inside * first + (1 - inside) * FILL
    flow, score = coarse_flow(lr.float(), bicubic_downscale(first), radius)
    flow_hr = SCALE * F.interpolate(flow, scale_factor=SCALE, mode="bilinear", align_corners=False)
    aligned, inside2 = _sample(crop, _apply(M, b, U + flow_hr[0]))
    aligned = inside2 * aligned + (1 - inside2) * FILL
    inside_lr = (F.avg_pool2d(inside2, SCALE) > 0.99).float()
    score = torch.where(inside_lr > 0, score, torch.full_like(score, -1.0))
    return aligned.to(lr.dtype), flow, score, inside_lr


def choose(scores: list[torch.Tensor]) -> torch.Tensor:
    """Index ``[B,1,h,w]`` of the candidate whose ``SMOOTH``² mean NCC is highest; the candidate whose NCC is
    highest over the whole image keeps ties within ``KEEP_BEST`` (flat regions, where every candidate matches
    about equally, follow the globally best one rather than a chance match at another scale)."""
    s = torch.cat([box(x, SMOOTH) for x in scores], 1)
    best = torch.stack([x.flatten(1).mean(1) for x in scores], 1).argmax(1)  # [B]
    s = s + KEEP_BEST * F.one_hot(best, len(scores)).to(s).view(s.shape[0], -1, 1, 1)
    return s.argmax(1, keepdim=True)


def pick(stack: list[torch.Tensor], index: torch.Tensor) -> torch.Tensor:
    """Per position, the ``index``-th of the same-shaped maps in ``stack`` (``index`` upsampled by nearest)."""
    t = torch.stack(stack, 0)
    idx = index
    if idx.shape[-2:] != t.shape[-2:]:
        idx = F.interpolate(idx.float(), size=t.shape[-2:], mode="nearest").long()
    return torch.gather(t, 0, idx.expand(t.shape[1:])[None])[0]


def frame_flow(c: Candidate, flow: torch.Tensor, frame_px: tuple[float, float]) -> torch.Tensor:
    """Candidate ``c`` with its local displacement ``flow`` [1,2,h,w] as a displacement (LR px) in the reference
    resized to the output's frame (``frame_px``: native px per LR px of that frame)."""
    h, w = flow.shape[-2:]
    p = _centres(h, w, flow.device)
    v = _apply(c.M, c.b, SCALE * (p + flow[0].float()))
    fp = torch.stack((v[0] / frame_px[0], v[1] / frame_px[1]))
    return (fp - p)[None]
