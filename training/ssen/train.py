"""``train-ssen``: the SSEN training recipe.

Data: HR photos (folder, or scikit-image's bundled photos), LR by bicubic ×4 down unless a paired LR folder
is given, references from a folder (CUFED layouts), a stereo/video partner, or the image itself.

Against the "ignores the reference" trap every batch mixes reference kinds (per sample):

* ``aligned``  – the ground-truth HR crop itself: exactly aligned during the ``warmup`` fraction of training, then
  shifted by up to ``max_shift`` LR pixels, the shift growing over the next ``curriculum`` fraction;
* ``partner``  – the sample's own reference (stereo partner / CUFED reference) at the same window;
* ``irrelevant`` – a crop of another image (the modulation masks must learn to gate it off); none during the
  warm-up, then ramping up to ``p_irrelevant`` together with the shifts;
* ``self``     – no reference: the bicubic ×4 upsampling of the LR input (self-similarity mode).

Loss: Charbonnier; optional PatchGAN adversarial fine-tuning for the last ``gan_steps`` steps. Adam with a cosine
schedule whose progress is ``max(step / steps, elapsed / max_minutes)`` so a wall-time budget always ends the
schedule cleanly. Checkpoints (``last.pt``) are resumable; the result is exported as safetensors with the config
and a training note in the metadata.
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
from .data import Sample, augment, bicubic_down, builtin_photos, folder_samples
from .metrics import psnr_y, ssim_y
from ...core.ssen.model import SCALE, SSENConfig, SSENet, param_count

log = logging.getLogger(__name__)


@dataclass
class TrainOptions:
    out_dir: str = "ssen_run"
    hr_dir: str | None = None        # None: scikit-image's bundled photos
    lr_dir: str | None = None
    ref_dir: str | None = None
    val_dir: str | None = None       # None with hr_dir None: the built-in hold-out split
    steps: int = 4000
    max_minutes: float = 0.0         # 0: no wall-time budget
    batch: int = 6
    patch: int = 32                  # LR patch side
    lr: float = 4e-4
    min_lr: float = 1e-6
    p_self: float = 0.15
    p_partner: float = 0.15
    p_irrelevant: float = 0.25       # reached after the warm-up; the rest is aligned references
    max_shift: float = 6.0           # LR pixels
    warmup: float = 0.25             # fraction of training with relevant references only
    curriculum: float = 0.35         # fraction over which shifts / irrelevant references ramp up
    offset_lr_scale: float = 0.25    # the offset estimators learn slower (stability, as in EDVR/BasicVSR)
    init: str | None = None          # start from these weights (shape-compatible tensors copied)
    gan_steps: int = 0
    gan_weight: float = 5e-3
    eval_every: int = 500
    save_every: int = 200
    seed: int = 0
    nf: int = 32
    n_pre: int = 4
    n_post: int = 4
    backbone: str = "edsr"
    device: str = "cpu"


def charbonnier(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    return torch.sqrt((x - y) ** 2 + eps * eps).mean()


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


def _rand(g: torch.Generator) -> float:
    return float(torch.rand((), generator=g))


class Batcher:
    def __init__(self, samples: list[Sample], opt: TrainOptions, gen: torch.Generator) -> None:
        big = 4 * opt.patch
        self.samples = [s for s in samples if min(s.hr.shape[-2:]) >= big]
        if not self.samples:
            raise ValueError(f"no training image is at least {big}×{big} pixels")
        self.opt, self.g = opt, gen
        self.weights = torch.tensor([2.0 if s.refs else 1.0 for s in self.samples])

    def _crop(self, img: torch.Tensor, y: int, x: int, size: int) -> torch.Tensor:
        h, w = img.shape[-2:]
        y, x = min(max(y, 0), h - size), min(max(x, 0), w - size)
        return img[:, y:y + size, x:x + size]

    def item(self, progress: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
        o, g = self.opt, self.g
        s = self.samples[int(torch.multinomial(self.weights, 1, generator=g))]
        size = SCALE * o.patch
        h, w = s.hr.shape[-2:]
        y, x = _randint(g, 0, (h - size) // SCALE) * SCALE, _randint(g, 0, (w - size) // SCALE) * SCALE
        hr = self._crop(s.hr, y, x, size)
        lr = self._crop(s.lr, y // SCALE, x // SCALE, o.patch) if s.lr is not None else bicubic_down(hr)
        u = _rand(g)
        ramp = min(max((progress - o.warmup) / max(o.curriculum, 1e-6), 0.0), 1.0)
        p_irr = o.p_irrelevant * ramp
        if u < p_irr:
            kind = "irrelevant"
            others = [t for t in self.samples if t is not s] or self.samples
            t = others[_randint(g, 0, len(others) - 1)]
            th, tw = t.hr.shape[-2:]
            ref = self._crop(t.hr, _randint(g, 0, th - size), _randint(g, 0, tw - size), size)
            ref = augment(ref, _randint(g, 0, 3), _rand(g) < 0.5)
        elif u < p_irr + o.p_self:
            kind = "self"
            ref = F.interpolate(lr[None], scale_factor=SCALE, mode="bicubic", align_corners=False)[0]
        elif u < p_irr + o.p_self + o.p_partner and s.refs:
            kind = "partner"
            r = s.refs[_randint(g, 0, len(s.refs) - 1)]
            if r.shape[-2:] != s.hr.shape[-2:]:
                r = F.interpolate(r[None], size=s.hr.shape[-2:], mode="bicubic", align_corners=False,
                                  antialias=True)[0].clamp(0, 1)
            ref = self._crop(r, y, x, size)
        else:
            kind = "aligned"
            reach = o.max_shift * ramp
            d = int(round(SCALE * reach))
            ref = self._crop(s.hr, y + _randint(g, -d, d), x + _randint(g, -d, d), size)
        k, flip = _randint(g, 0, 3), _rand(g) < 0.5
        return augment(lr, k, flip), augment(hr, k, flip), augment(ref, k, flip), kind

    def batch(self, progress: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        items = [self.item(progress) for _ in range(self.opt.batch)]
        return tuple(torch.stack([it[i] for it in items]).to(self.opt.device) for i in range(3))


def validation_cases(samples: list[Sample]) -> list[tuple[str, torch.Tensor, torch.Tensor, dict]]:
    """(name, lr, hr, refs-by-mode) for every validation image; ``irrelevant`` is the next image."""
    cases = []
    for i, s in enumerate(samples):
        hr = s.hr[:, : s.hr.shape[1] // SCALE * SCALE, : s.hr.shape[2] // SCALE * SCALE][None]
        lr = s.lr[None] if s.lr is not None else bicubic_down(hr)
        other = samples[(i + 1) % len(samples)].hr if len(samples) > 1 else torch.flip(s.hr, (-1, -2))
        refs = {"self": None, "oracle": hr, "irrelevant": other[None]}
        if s.refs:
            refs["partner"] = s.refs[0][None]
        cases.append((s.name, lr, hr, refs))
    return cases


@torch.no_grad()
def evaluate(model: SSENet, cases, device: str = "cpu") -> dict[str, dict[str, float]]:
    """Y-PSNR / Y-SSIM (border shaved by 4) per image and reference mode, plus bicubic."""
    model.eval()
    res: dict[str, dict[str, float]] = {}
    for name, lr, hr, refs in cases:
        lr, hr = lr.to(device), hr.to(device)
        bic = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        row = {"bicubic": psnr_y(bic, hr)}
        for mode, ref in refs.items():
            sr = model(lr, None if ref is None else ref.to(device))
            row[mode] = psnr_y(sr, hr)
            row[mode + "_ssim"] = ssim_y(sr, hr)
        res[name] = row
    return res


def _format(res: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{n}: " + " ".join(f"{k}={v:.3f}" for k, v in r.items() if not k.endswith("_ssim"))
                     for n, r in res.items())


def _init_from(model: SSENet, path: str) -> None:
    """Copy every tensor of ``path`` (safetensors / training checkpoint) into ``model`` where names match; tensors
    whose shape differs are copied into the leading slice (new input channels start at zero)."""
    from ...core.checkpoint import load_state_dict

    src = load_state_dict(path)
    own = model.state_dict()
    copied = 0
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
            copied += 1
    log.info("initialised %d/%d tensors from %s", copied, len(own), path)


def train(opt: TrainOptions, progress=None) -> Path:
    """Run (or resume) training; returns the exported safetensors path."""
    out = Path(opt.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(opt.seed)
    if opt.hr_dir:
        samples = folder_samples(opt.hr_dir, opt.lr_dir, opt.ref_dir)
        val = folder_samples(opt.val_dir) if opt.val_dir else []
        source = f"folder {opt.hr_dir}" + (f" with references from {opt.ref_dir}" if opt.ref_dir else "")
    else:
        samples, val = builtin_photos("train"), builtin_photos("holdout")
        source = "scikit-image bundled photos (ssen.data.builtin_photos('train'))"
    cfg = SSENConfig(nf=opt.nf, n_pre=opt.n_pre, n_post=opt.n_post, backbone=opt.backbone)
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
    cases = validation_cases(val)
    log.info("SSEN %s, %d parameters; %d training images (%s)", cfg, param_count(model), len(samples), source)

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

    t0, last_log, loss_avg = time.monotonic(), 0.0, None
    gan_from = 1.0 - opt.gan_steps / max(opt.steps, 1)
    while frac() < 1.0:
        f = frac()
        lr_now = opt.min_lr + 0.5 * (opt.lr - opt.min_lr) * (1 + math.cos(math.pi * f))
        for group in optim.param_groups:
            group["lr"] = lr_now * group["scale"]
        model.train()
        lr_b, hr_b, ref_b = batcher.batch(f)
        sr = model(lr_b, ref_b)
        loss = charbonnier(sr, hr_b)
        if disc is not None and f >= gan_from:
            adv = F.softplus(-disc(sr)).mean()
            loss = loss + opt.gan_weight * adv
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
        if progress is not None:
            progress(int(1000 * frac()), 1000)
        if now - last_log > 30:
            last_log = now
            log.info("step %d (%.0f%%, %.0f s) loss %.5f lr %.2e", step, 100 * frac(), elapsed, loss_avg, lr_now)
        if step % opt.save_every == 0:
            save()
        if cases and opt.eval_every and step % opt.eval_every == 0:
            log.info("val @%d: %s", step, _format(evaluate(model, cases, opt.device)))
            t0 = time.monotonic()
    save()
    result = evaluate(model, cases, opt.device) if cases else {}
    if result:
        log.info("final val @%d: %s", step, _format(result))
        (out / "validation.json").write_text(json.dumps(result, indent=1))
    meta = {"config": json.dumps(cfg.to_json()), "trained_on": source, "steps": str(step),
            "options": json.dumps(asdict(opt)), "validation": json.dumps(result)}
    path = save_safetensors(model.state_dict(), out / "ssen.safetensors", metadata=meta)
    log.info("exported %s", path)
    return path
