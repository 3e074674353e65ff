"""Random SSEN training batches: HR crops, their LR, a reference of a random kind and the true displacement."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ...core.ssen.resample import SCALE
from .camera import camera
from .data import Sample, augment, make_lr
from .options import KINDS, TrainOptions
from .references import as_float, aug_field, degrade, jitter, rand, randint, view


class Batcher:
    """Random training items: ``(lr, hr, ref, disp, known, kind)`` — ``disp`` ``[2,h,w]`` the true displacement
    (LR px, where the target's content lies in the reference) and ``known`` ``[1,h,w]`` where it is defined."""

    def __init__(self, samples: list[Sample], opt: TrainOptions, gen: torch.Generator) -> None:
        big = SCALE * opt.patch
        self.samples = [s for s in samples if min(s.hr.shape[-2:]) >= big]
        if not self.samples:
            raise ValueError(f"no training image is at least {big}×{big} pixels")
        self.opt, self.g = opt, gen
        area = torch.tensor([float(s.hr.shape[-1] * s.hr.shape[-2]) for s in self.samples])
        self.weights = area.sqrt() * torch.tensor([2.0 if s.refs else 1.0 for s in self.samples])
        self.kind_p = torch.tensor([float(getattr(opt, f"p_{k}")) for k in KINDS])

    def _crop(self, img: torch.Tensor, y: int, x: int, size: int) -> torch.Tensor:
        h, w = img.shape[-2:]
        y, x = min(max(y, 0), h - size), min(max(x, 0), w - size)
        return as_float(img[:, y:y + size, x:x + size])

    def item(self):
        o, g = self.opt, self.g
        i = int(torch.multinomial(self.weights, 1, generator=g))
        s = self.samples[i]
        S = SCALE * o.patch
        H, W = s.hr.shape[-2:]
        for _ in range(4):  # prefer crops with some detail: flat sky teaches little
            y, x = randint(g, 0, (H - S) // SCALE) * SCALE, randint(g, 0, (W - S) // SCALE) * SCALE
            hr = self._crop(s.hr, y, x, S)
            detail = float((hr[:, 1:] - hr[:, :-1]).abs().mean() + (hr[:, :, 1:] - hr[:, :, :-1]).abs().mean())
            if detail > 0.02 or rand(g) < 0.25:
                break
        lr = self._crop(s.lr, y // SCALE, x // SCALE, o.patch) if s.lr is not None else make_lr(hr)
        kind = KINDS[int(torch.multinomial(self.kind_p, 1, generator=g))]
        if kind == "partner" and not s.refs:
            kind = "warped"
        n = o.patch
        ci = SCALE * torch.arange(n, dtype=torch.float32) + (SCALE - 1) / 2  # LR centres in HR pixel indices
        gi, gj = torch.meshgrid(ci, ci, indexing="ij")
        disp, known = torch.zeros(2, n, n), torch.zeros(1, n, n)
        if kind == "self":
            ref = F.interpolate(lr[None], scale_factor=SCALE, mode="bicubic", align_corners=False)[0]
            known.fill_(1)
        elif kind == "exact":
            m = int(o.max_shift)
            yy = min(max(y + SCALE * randint(g, -m, m), 0), H - S)
            xx = min(max(x + SCALE * randint(g, -m, m), 0), W - S)
            ref = self._crop(s.hr, yy, xx, S)
            a, b = gi + (y - yy), gj + (x - xx)
            disp = torch.stack(((a - gi) / SCALE, (b - gj) / SCALE))
            known = ((a >= 0) & (a <= S - 1) & (b >= 0) & (b <= S - 1)).float()[None]
        elif kind in ("warped", "camera"):
            m = o.max_shift if rand(g) < 0.5 else min(4.0, o.max_shift)
            cy, cx = y + S / 2 + SCALE * rand(g, -m, m), x + S / 2 + SCALE * rand(g, -m, m)
            sc = math.exp(rand(g, math.log(o.scale_min), math.log(o.scale_max)))
            ang = math.radians(rand(g, -o.rot_deg, o.rot_deg))
            seen = view(s.hr, cy, cx, S, sc, ang)
            if kind == "warped":
                ref = degrade(jitter(seen, g), g)
            else:  # another moment of a hand-held camera (as training/ssen/heldout.py's frames, other settings)
                ref = camera(jitter(seen, g, 0.5)[None], g, blur=rand(g, 0.3, 0.8), motion=rand(g, 0.0, 2.5),
                             noise=rand(g, 0.004, 0.016), quality=randint(g, 70, 95))[0]
            dy_, dx_ = (y + gi + 0.5) - cy, (x + gj + 0.5) - cx
            c, sn = math.cos(ang), math.sin(ang)
            a = (c * dy_ - sn * dx_) / sc + S / 2 - 0.5
            b = (sn * dy_ + c * dx_) / sc + S / 2 - 0.5
            disp = torch.stack(((a - gi) / SCALE, (b - gj) / SCALE))
            known = ((a >= 0) & (a <= S - 1) & (b >= 0) & (b <= S - 1)).float()[None]
        elif kind == "partner":
            r = s.refs[randint(g, 0, len(s.refs) - 1)]
            if r.shape[-2:] != s.hr.shape[-2:]:
                r = F.interpolate(as_float(r)[None], size=s.hr.shape[-2:], mode="bicubic", align_corners=False,
                                  antialias=True)[0].clamp(0, 1)
            ref = jitter(self._crop(r, y, x, S), g, 0.5)
        elif kind == "other":
            for _ in range(10):
                yy, xx = randint(g, 0, H - S), randint(g, 0, W - S)
                if abs(yy - y) > S or abs(xx - x) > S:
                    break
            ref = jitter(self._crop(s.hr, yy, xx, S), g)
        else:  # irrelevant
            others = [t for t in self.samples if t is not s] or self.samples
            t = others[randint(g, 0, len(others) - 1)].hr
            th, tw = t.shape[-2:]
            ref = self._crop(t, randint(g, 0, max(th - S, 0)), randint(g, 0, max(tw - S, 0)), min(S, th, tw))
            if ref.shape[-1] != S or ref.shape[-2] != S:
                ref = F.interpolate(ref[None], size=(S, S), mode="bicubic", align_corners=False)[0].clamp(0, 1)
            ref = jitter(augment(ref, randint(g, 0, 3), rand(g) < 0.5), g)
        k, flip = randint(g, 0, 3), rand(g) < 0.5
        return (augment(lr, k, flip), augment(hr, k, flip), augment(ref, k, flip), aug_field(disp, k, flip),
                augment(known, k, flip), kind)

    def batch(self):
        items = [self.item() for _ in range(self.opt.batch)]
        return tuple(torch.stack([it[j] for it in items]) for j in range(5)) + ([it[5] for it in items],)


class Stream(torch.utils.data.IterableDataset):
    """Batches generated in worker processes, each with its own generator (seed, worker id, and the step the run
    starts at, so a resumed run does not replay the batches of its first start)."""

    def __init__(self, samples: list[Sample], opt: TrainOptions, start: int = 0) -> None:
        self.samples, self.opt, self.start = samples, opt, start

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        torch.set_num_threads(1)
        g = torch.Generator().manual_seed(1000 * self.opt.seed + 1 + (info.id if info else 0) + 1_000_003 * self.start)
        b = Batcher(self.samples, self.opt, g)
        while True:
            out = b.batch()
            yield out[:5] + (tuple(out[5]),)
