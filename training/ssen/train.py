"""``train-ssen``: the SSEN training recipe.

Data: the package photo set (``photos``, see :mod:`.photos`), a folder of HR images (``hr_dir``; optional paired
LR and CUFED-style references), or scikit-image's bundled photos. LR = antialiased bicubic ×4 down unless paired.

Every batch mixes reference kinds per sample (fractions ``p_*``), so the network learns both to use a reference
that is not pixel-aligned and to leave an unrelated one alone:

* ``self``        no reference: bicubic ×4 of the LR input (self-similarity mode)
* ``exact``       the ground-truth HR window shifted by a whole number of LR pixels (up to ``max_shift``)
* ``warped``      the ground truth seen through a random similarity transform — shift up to ±``max_shift`` LR px
                  (half the samples within ±4), scale ``scale_min``–``scale_max``, rotation ±``rot_deg`` — with
                  colour jitter and sometimes blur or noise; partially overlapping when the shift is large
* ``partner``     the sample's own reference (stereo partner, CUFED reference) at the same window, jittered
* ``other``       another region of the same photo (similar texture, wrong content)
* ``irrelevant``  a crop of another photo (random rot90 / flip, colour jitter)

Loss: Charbonnier on the output, plus ``grid_weight`` × the error energy at the 4-pixel-period grid frequencies
(:func:`grid_energy`), plus ``disp_weight`` × the mean L1 error of the composed displacement
(:func:`aware_restore.core.ssen.infer.displacement`) where the true displacement is known (``self``, ``exact``,
``warped``; textured positions whose content is inside the reference) — this keeps the offset map a faithful
picture of where the reference is read; optional PatchGAN fine-tuning for the last ``gan_steps`` steps. Adam with
a cosine schedule whose progress is ``max(step / steps, elapsed / max_minutes)``, so a wall-time budget ends the
schedule cleanly; offset estimators at 0.25× the learning rate. Resumable (``OUT/last.pt``); exported as
safetensors with the config and a training note. ``device="cuda"`` with ``amp`` (bf16 autocast) and ``workers``
(batch-generating processes) is the GPU recipe (``training/ssen/gpu_train.sh``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...core.checkpoint import save_safetensors
from ...core.ssen.match import box, luma
from ...core.ssen.model import SCALE, SSENConfig, SSENet, param_count
from .data import Sample, augment, bicubic_down, builtin_photos, folder_samples, photo_samples
from .metrics import psnr_y, ssim_y

log = logging.getLogger(__name__)

KINDS = ("self", "exact", "warped", "partner", "other", "irrelevant")
VAL_MODES = ("self", "aligned", "shift8", "shift32", "irrelevant")


@dataclass
class TrainOptions:
    out_dir: str = "ssen_run"
    photos: str | None = None        # prepared package photo set (training/ssen/photos.py)
    hr_dir: str | None = None        # else a folder of HR images; neither: scikit-image's bundled photos
    lr_dir: str | None = None
    ref_dir: str | None = None
    val_dir: str | None = None
    steps: int = 4000
    max_minutes: float = 0.0         # 0: no wall-time budget
    batch: int = 8
    patch: int = 32                  # LR patch side
    lr: float = 4e-4
    min_lr: float = 1e-6
    warm_steps: int = 50             # linear learning-rate warm-up
    offset_lr_scale: float = 0.25    # the offset estimators learn slower (as in EDVR / BasicVSR)
    p_self: float = 0.15
    p_exact: float = 0.10
    p_warped: float = 0.30
    p_partner: float = 0.08          # falls back to "warped" for samples without a partner
    p_other: float = 0.07
    p_irrelevant: float = 0.30
    max_shift: float = 16.0          # LR pixels
    rot_deg: float = 5.0
    scale_min: float = 0.7
    scale_max: float = 1.5
    disp_weight: float = 0.005
    grid_weight: float = 2.0         # error energy at the 4-pixel-period grid frequencies (anti-checkerboard)
    init: str | None = None          # start from these weights (shape-compatible tensors copied)
    gan_steps: int = 0
    gan_weight: float = 5e-3
    eval_every: int = 500
    save_every: int = 100
    seed: int = 0
    nf: int = 32
    n_pre: int = 4
    n_post: int = 4
    backbone: str = "edsr"
    est_nf: int = 32
    hr_nf: int = 16
    device: str = "cpu"
    amp: bool = False                # bf16 autocast (CUDA only)
    workers: int = 0                 # batch-generating worker processes (0: in the training process)

    def config(self) -> SSENConfig:
        return SSENConfig(nf=self.nf, n_pre=self.n_pre, n_post=self.n_post, backbone=self.backbone,
                          est_nf=self.est_nf, hr_nf=self.hr_nf)


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


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


class PatchDiscriminator(nn.Module):
    """70×70-style PatchGAN (no normalisation, small)."""

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        layers, c = [], 3
        for co in (nf, 2 * nf, 4 * nf):
            layers += [nn.Conv2d(c, co, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c = co
        layers += [nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform integer in [lo, hi]."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _rand(g: torch.Generator, lo: float = 0.0, hi: float = 1.0) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g))


def _f(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 255 if x.dtype == torch.uint8 else x.float()


def _view(img: torch.Tensor, cy: float, cx: float, size: int, scale: float, angle: float) -> torch.Tensor:
    """A ``size²`` view of ``img`` ``[3,H,W]`` centred at (cy, cx) (continuous coordinates, pixel centres at +0.5),
    on a grid rotated by ``angle`` (radians) with a spacing of ``scale`` source pixels (bicubic; a Gaussian
    pre-blur when shrinking; edges replicated)."""
    H, W = img.shape[-2:]
    half = math.ceil(size * scale * 0.75) + 4  # a local region holds the whole rotated grid
    y0, x0 = int(cy) - half, int(cx) - half
    pad = (max(0, -x0), max(0, x0 + 2 * half - W), max(0, -y0), max(0, y0 + 2 * half - H))
    reg = _f(img[:, max(0, y0):min(H, y0 + 2 * half), max(0, x0):min(W, x0 + 2 * half)])[None]
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
        reg = _blur(reg, 0.5 * math.sqrt(scale ** 2 - 1), 2)
    return F.grid_sample(reg, grid, mode="bicubic", padding_mode="border", align_corners=False)[0].clamp(0, 1)


def _blur(x: torch.Tensor, sigma: float, r: int) -> torch.Tensor:
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    n = 2 * r + 1
    return F.conv2d(F.pad(x, (r, r, r, r), mode="replicate"), (k[:, None] * k[None, :]).expand(3, 1, n, n), groups=3)


def _jitter(x: torch.Tensor, g: torch.Generator, strength: float = 1.0) -> torch.Tensor:
    """Another exposure / white balance: per-channel gain ±12 %, offset ±0.05, sometimes a gamma 0.8–1.25."""
    gain = torch.tensor([_rand(g, 1 - 0.12 * strength, 1 + 0.12 * strength) for _ in range(3)]).view(3, 1, 1)
    y = x * gain + _rand(g, -0.05, 0.05) * strength
    if _rand(g) < 0.3:
        y = y.clamp(0, 1) ** _rand(g, 0.8, 1.25)
    return y.clamp(0, 1)


def _degrade(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Another camera: sometimes a slight blur (σ 0.3–1 px), sometimes noise (σ 0.003–0.015)."""
    if _rand(g) < 0.25:
        x = _blur(x[None], _rand(g, 0.3, 1.0), 3)[0]
    if _rand(g) < 0.25:
        x = x + torch.randn(x.shape, generator=g) * _rand(g, 0.003, 0.015)
    return x.clamp(0, 1)


def _aug_matrix(k: int, flip: bool, n: int = 8) -> torch.Tensor:
    """``M`` with ``d' = M d`` for a displacement field under ``augment(., k, flip)``, from index maps."""
    yy, xx = torch.meshgrid(torch.arange(n, dtype=torch.float32), torch.arange(n, dtype=torch.float32),
                            indexing="ij")
    src = augment(torch.stack((yy, xx)), k, flip)  # where every augmented pixel came from
    jac = torch.tensor([[float(src[0, 1, 0] - src[0, 0, 0]), float(src[0, 0, 1] - src[0, 0, 0])],
                        [float(src[1, 1, 0] - src[1, 0, 0]), float(src[1, 0, 1] - src[1, 0, 0])]])
    return torch.linalg.inv(jac)


def _aug_field(d: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    return torch.einsum("ij,jhw->ihw", _aug_matrix(k, flip), augment(d, k, flip))


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
        self.kind_p = torch.tensor([getattr(opt, f"p_{k}") for k in KINDS])

    def _crop(self, img: torch.Tensor, y: int, x: int, size: int) -> torch.Tensor:
        h, w = img.shape[-2:]
        y, x = min(max(y, 0), h - size), min(max(x, 0), w - size)
        return _f(img[:, y:y + size, x:x + size])

    def item(self):
        o, g = self.opt, self.g
        i = int(torch.multinomial(self.weights, 1, generator=g))
        s = self.samples[i]
        S = SCALE * o.patch
        H, W = s.hr.shape[-2:]
        for _ in range(4):  # prefer crops with some detail: flat sky teaches little
            y, x = _randint(g, 0, (H - S) // SCALE) * SCALE, _randint(g, 0, (W - S) // SCALE) * SCALE
            hr = self._crop(s.hr, y, x, S)
            detail = float((hr[:, 1:] - hr[:, :-1]).abs().mean() + (hr[:, :, 1:] - hr[:, :, :-1]).abs().mean())
            if detail > 0.02 or _rand(g) < 0.25:
                break
        lr = self._crop(s.lr, y // SCALE, x // SCALE, o.patch) if s.lr is not None else bicubic_down(hr)
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
            yy = min(max(y + SCALE * _randint(g, -m, m), 0), H - S)
            xx = min(max(x + SCALE * _randint(g, -m, m), 0), W - S)
            ref = self._crop(s.hr, yy, xx, S)
            a, b = gi + (y - yy), gj + (x - xx)
            disp = torch.stack(((a - gi) / SCALE, (b - gj) / SCALE))
            known = ((a >= 0) & (a <= S - 1) & (b >= 0) & (b <= S - 1)).float()[None]
        elif kind == "warped":
            m = o.max_shift if _rand(g) < 0.5 else min(4.0, o.max_shift)
            cy, cx = y + S / 2 + SCALE * _rand(g, -m, m), x + S / 2 + SCALE * _rand(g, -m, m)
            sc = math.exp(_rand(g, math.log(o.scale_min), math.log(o.scale_max)))
            ang = math.radians(_rand(g, -o.rot_deg, o.rot_deg))
            ref = _degrade(_jitter(_view(s.hr, cy, cx, S, sc, ang), g), g)
            dy_, dx_ = (y + gi + 0.5) - cy, (x + gj + 0.5) - cx
            c, sn = math.cos(ang), math.sin(ang)
            a = (c * dy_ - sn * dx_) / sc + S / 2 - 0.5
            b = (sn * dy_ + c * dx_) / sc + S / 2 - 0.5
            disp = torch.stack(((a - gi) / SCALE, (b - gj) / SCALE))
            known = ((a >= 0) & (a <= S - 1) & (b >= 0) & (b <= S - 1)).float()[None]
        elif kind == "partner":
            r = s.refs[_randint(g, 0, len(s.refs) - 1)]
            if r.shape[-2:] != s.hr.shape[-2:]:
                r = F.interpolate(_f(r)[None], size=s.hr.shape[-2:], mode="bicubic", align_corners=False,
                                  antialias=True)[0].clamp(0, 1)
            ref = _jitter(self._crop(r, y, x, S), g, 0.5)
        elif kind == "other":
            for _ in range(10):
                yy, xx = _randint(g, 0, H - S), _randint(g, 0, W - S)
                if abs(yy - y) > S or abs(xx - x) > S:
                    break
            ref = _jitter(self._crop(s.hr, yy, xx, S), g)
        else:  # irrelevant
            others = [t for t in self.samples if t is not s] or self.samples
            t = others[_randint(g, 0, len(others) - 1)].hr
            th, tw = t.shape[-2:]
            ref = self._crop(t, _randint(g, 0, max(th - S, 0)), _randint(g, 0, max(tw - S, 0)), min(S, th, tw))
            if ref.shape[-1] != S or ref.shape[-2] != S:
                ref = F.interpolate(ref[None], size=(S, S), mode="bicubic", align_corners=False)[0].clamp(0, 1)
            ref = _jitter(augment(ref, _randint(g, 0, 3), _rand(g) < 0.5), g)
        k, flip = _randint(g, 0, 3), _rand(g) < 0.5
        return (augment(lr, k, flip), augment(hr, k, flip), augment(ref, k, flip), _aug_field(disp, k, flip),
                augment(known, k, flip), kind)

    def batch(self):
        items = [self.item() for _ in range(self.opt.batch)]
        return tuple(torch.stack([it[j] for it in items]) for j in range(5)) + ([it[5] for it in items],)


class _Stream(torch.utils.data.IterableDataset):
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


def validation_cases(samples: list[Sample]) -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    """Whole-image validation for a folder: (name, lr, hr, refs-by-mode); ``irrelevant`` is the next image."""
    cases = []
    for i, s in enumerate(samples):
        hr = _f(s.hr[:, : s.hr.shape[1] // SCALE * SCALE, : s.hr.shape[2] // SCALE * SCALE])[None]
        lr = s.lr[None] if s.lr is not None else bicubic_down(hr)
        other = _f(samples[(i + 1) % len(samples)].hr) if len(samples) > 1 else torch.flip(hr[0], (-1, -2))
        refs = {"self": None, "oracle": hr, "irrelevant": other[None]}
        if s.refs:
            refs["partner"] = _f(s.refs[0])[None]
        cases.append((s.name, lr, hr, refs))
    return cases


@torch.no_grad()
def evaluate(model: SSENet, cases, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Y-PSNR / Y-SSIM (border shaved by 4) per image and reference mode, plus bicubic (folder validation)."""
    model.eval()
    res: dict[str, dict[str, float]] = {}
    for name, lr, hr, refs in cases:
        lr, hr = lr.to(device), hr.to(device)
        bic = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        row = {"bicubic": psnr_y(bic, hr)}
        for mode, ref in refs.items():
            sr = model(lr, None if ref is None else ref.to(device)).float()
            row[mode] = psnr_y(sr, hr)
            row[mode + "_ssim"] = ssim_y(sr, hr)
        res[name] = row
    return res


def _format(res: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{n}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items() if not k.endswith("_ssim"))
                     for n, r in res.items())


MIN_INIT_FRACTION = 0.2  # --init must fill at least this share of the model's tensors (a backbone-only file: ~23%)


def _init_from(model: SSENet, path: str) -> None:
    """Copy every tensor of ``path`` (safetensors / training checkpoint) into ``model`` where names match; tensors
    whose shape differs are copied into the leading slice (new input channels start at zero).

    ``path`` must be an SSEN checkpoint (a file of another family is a :class:`WrongModelError`), and it must fill
    at least :data:`MIN_INIT_FRACTION` of the model's tensors (else a :class:`StrictLoadError`: training would
    silently start from scratch); tensors left at their fresh initialisation are logged as a warning."""
    from ...core import registry
    from ...core.checkpoint import load_state_dict
    from ...core.errors import StrictLoadError

    src = load_state_dict(path)
    registry.require(src, "ssen", source=str(path), folder="ssen")
    own = model.state_dict()
    copied: list[str] = []
    with torch.no_grad():
        for k, v in src.items():
            if k not in own:
                continue
            t = own[k]
            if t.shape == v.shape:
                t.copy_(v)
            elif t.ndim == v.ndim:
                t.zero_()
                t[tuple(slice(0, min(a, b)) for a, b in zip(t.shape, v.shape))] = \
                    v[tuple(slice(0, min(a, b)) for a, b in zip(t.shape, v.shape))]
            else:
                continue
            copied.append(k)
    if len(copied) < MIN_INIT_FRACTION * len(own):
        raise StrictLoadError(f"--init '{path}' fills only {len(copied)} of the model's {len(own)} tensors (at least "
                              f"{MIN_INIT_FRACTION:.0%} needed; names or layouts differ); give an SSEN checkpoint of "
                              "a compatible configuration (--nf, --blocks, --backbone) or train without --init")
    fresh = sorted(set(own) - set(copied))
    if fresh:
        groups = sorted({k.split(".")[0] for k in fresh})
        log.warning("--init %s: %d of %d tensors copied; %d start from scratch (%s)", path, len(copied), len(own),
                    len(fresh), ", ".join(f"{g}.*" for g in groups[:6]))
    else:
        log.info("initialised %d/%d tensors from %s", len(copied), len(own), path)


def _data(opt: TrainOptions):
    """(training samples, validation callable, source description)."""
    from . import heldout

    if opt.photos:
        samples = photo_samples(opt.photos)
        crops = heldout.cases(heldout.holdout_images(opt.photos))
        quick = [c for c in crops if c["name"].endswith("#0")]

        def validate(model, final: bool) -> dict:
            res = heldout.evaluate(model, crops if final else quick, None if final else VAL_MODES)
            if final:
                res["stereo"] = heldout.evaluate(model, heldout.stereo_cases(opt.photos))
            return res

        return samples, validate, f"package photo set {opt.photos} (training/ssen/photos.py)"
    if opt.hr_dir:
        samples = folder_samples(opt.hr_dir, opt.lr_dir, opt.ref_dir)
        val = validation_cases(folder_samples(opt.val_dir)) if opt.val_dir else []
        source = f"folder {opt.hr_dir}" + (f" with references from {opt.ref_dir}" if opt.ref_dir else "")
    else:
        samples = builtin_photos("train")
        val = validation_cases(builtin_photos("holdout"))
        source = "scikit-image bundled photos (training.ssen.data.builtin_photos('train'))"

    def validate(model, final: bool) -> dict:
        return {"rows": evaluate(model, val, opt.device)} if val else {}

    return samples, validate, source


def _val_text(res: dict) -> str:
    from .heldout import summary

    return summary(res) if "mean" in res else _format(res.get("rows", {}))


def train(opt: TrainOptions, progress=None) -> Path:
    """Run (or resume) training; returns the exported safetensors path."""
    out = Path(opt.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(opt.seed)
    samples, validate, source = _data(opt)
    cfg = opt.config()
    model = SSENet(cfg).to(opt.device)
    est = [p for n, p in model.named_parameters() if n.startswith("ssen.estimators.")]
    rest = [p for n, p in model.named_parameters() if not n.startswith("ssen.estimators.")]
    optim = torch.optim.Adam([{"params": rest, "scale": 1.0}, {"params": est, "scale": opt.offset_lr_scale}],
                             lr=opt.lr, betas=(0.9, 0.99))
    disc = d_optim = None
    if opt.gan_steps:
        disc = PatchDiscriminator().to(opt.device)
        d_optim = torch.optim.Adam(disc.parameters(), lr=opt.lr, betas=(0.5, 0.99))
    if opt.init:
        _init_from(model, opt.init)
    step, elapsed = 0, 0.0
    ckpt = out / "last.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=opt.device, weights_only=True)
        model.load_state_dict(state["model"])
        optim.load_state_dict(state["optim"])
        gen.set_state(state["gen"])
        step, elapsed = int(state["step"]), float(state["elapsed"])
        if disc is not None and "disc" in state:
            disc.load_state_dict(state["disc"])
            d_optim.load_state_dict(state["d_optim"])
        log.info("resumed from %s at step %d", ckpt, step)
    batcher = Batcher(samples, opt, gen)
    stream = None
    if opt.workers:
        loader = torch.utils.data.DataLoader(_Stream(batcher.samples, opt, step), batch_size=None,
                                             num_workers=opt.workers, prefetch_factor=4, persistent_workers=True,
                                             pin_memory=torch.device(opt.device).type == "cuda")
        stream = iter(loader)
    log.info("SSEN %s, %d parameters; %d training images (%s)", cfg, param_count(model), len(batcher.samples),
             source)
    amp = opt.amp and str(opt.device).startswith("cuda")

    def frac() -> float:
        f = step / opt.steps
        if opt.max_minutes > 0:
            f = max(f, elapsed / (60 * opt.max_minutes))
        return min(f, 1.0)

    def save() -> None:
        state = {"model": model.state_dict(), "optim": optim.state_dict(), "gen": gen.get_state(),
                 "step": step, "elapsed": elapsed}
        if disc is not None:
            state.update(disc=disc.state_dict(), d_optim=d_optim.state_dict())
        torch.save(state, out / "last.tmp")
        (out / "last.tmp").replace(ckpt)

    def export(result: dict) -> Path:
        summary = result.get("mean", {}) if "mean" in result else result.get("rows", {})
        meta = {"config": json.dumps(cfg.to_json()), "family": "ssen", "trained_on": source, "steps": str(step),
                "options": json.dumps(asdict(opt)), "validation": json.dumps(summary)}
        return save_safetensors(model.state_dict(), out / "ssen.safetensors", metadata=meta)

    t0, last_log, loss_avg = time.monotonic(), 0.0, None
    kind_loss: dict[str, float] = {}
    gan_from = 1.0 - opt.gan_steps / max(opt.steps, 1)
    while frac() < 1.0:
        f = frac()
        lr_now = opt.min_lr + 0.5 * (opt.lr - opt.min_lr) * (1 + math.cos(math.pi * f))
        if step < opt.warm_steps:
            lr_now *= (step + 1) / opt.warm_steps
        for group in optim.param_groups:
            group["lr"] = lr_now * group["scale"]
        model.train()
        lr_b, hr_b, ref_b, disp_b, known_b, kinds = next(stream) if stream is not None else batcher.batch()
        lr_b, hr_b, ref_b, disp_b, known_b = (t.to(opt.device, non_blocking=True)
                                              for t in (lr_b, hr_b, ref_b, disp_b, known_b))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            sr, trace = model(lr_b, ref_b, return_offsets=True)
        sr = sr.float()
        per = torch.sqrt((sr - hr_b) ** 2 + 1e-6).mean((1, 2, 3))
        loss = per.mean()
        if opt.disp_weight and trace:
            yl = luma(lr_b)
            textured = ((box(yl * yl, 5) - box(yl, 5) ** 2).clamp_min(0).sqrt() > 0.01).float()
            wmask = known_b * textured
            err = (trace["displacement"].float() - disp_b).abs().sum(1, keepdim=True)
            disp_loss = (err * wmask).sum() / wmask.sum().clamp_min(1.0)
            loss = loss + opt.disp_weight * disp_loss
            per_kind = [("disp", float(disp_loss.detach()))]
        else:
            per_kind = []
        if opt.grid_weight:
            g_loss = grid_energy(sr - hr_b)
            loss = loss + opt.grid_weight * g_loss
            per_kind.append(("grid", float(g_loss.detach())))
        if disc is not None and f >= gan_from:
            loss = loss + opt.gan_weight * F.softplus(-disc(sr)).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optim.step()
        if disc is not None and f >= gan_from:
            d_loss = F.softplus(-disc(hr_b)).mean() + F.softplus(disc(sr.detach())).mean()
            d_optim.zero_grad(set_to_none=True)
            d_loss.backward()
            d_optim.step()
        step += 1
        now = time.monotonic()
        elapsed += now - t0
        t0 = now
        loss_avg = loss.item() if loss_avg is None else 0.98 * loss_avg + 0.02 * loss.item()
        for kd, v in list(zip(kinds, per.tolist())) + per_kind:
            kind_loss[kd] = v if kd not in kind_loss else 0.97 * kind_loss[kd] + 0.03 * v
        if progress is not None:
            progress(int(1000 * frac()), 1000)
        if now - last_log > 60:
            last_log = now
            log.info("step %d (%.1f%%, %.0f s, %.2f s/step) loss %.5f lr %.2e | %s", step, 100 * frac(), elapsed,
                     elapsed / max(step, 1), loss_avg, lr_now,
                     " ".join(f"{k}={v:.4f}" for k, v in sorted(kind_loss.items())))
        if step % opt.save_every == 0:
            save()
        if opt.eval_every and step % opt.eval_every == 0:
            res = validate(model, final=False)
            log.info("val @%d: %s", step, _val_text(res))
            export(res)  # the latest weights, loadable while the run goes on
            t0 = time.monotonic()
    save()
    result = validate(model, final=True)
    if result:
        log.info("final val @%d: %s", step, _val_text(result))
        (out / "validation.json").write_text(json.dumps(result, indent=1))
    path = export(result)
    log.info("exported %s", path)
    return path
