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
* ``camera``      the same view through the camera model (:func:`.camera.camera`: lens and motion blur,
                  signal-dependent noise, JPEG 70–95): another moment of a hand-held camera (0 % by default)
* ``partner``     the sample's own reference (stereo partner, CUFED reference) at the same window, jittered
* ``other``       another region of the same photo (similar texture, wrong content)
* ``irrelevant``  a crop of another photo (random rot90 / flip, colour jitter)

Loss: Charbonnier on the output, plus ``grid_weight`` × the error energy at the 4-pixel-period grid frequencies
(:func:`grid_energy`), plus ``disp_weight`` × the mean L1 error of the composed displacement
(:func:`aware_restore.core.ssen.infer.displacement`) where the true displacement is known (``self``, ``exact``,
``warped``, ``camera``; textured positions whose content is inside the reference) — this keeps the offset map a
faithful picture of where the reference is read; plus ``harm_weight`` × :func:`.losses.harm` (the regions where the
output with a reference is worse than the same network's output without one: a reference may be useless, never
harmful); optional PatchGAN fine-tuning for the last ``gan_steps`` steps. Adam with a cosine schedule whose progress
is ``max(step / steps, elapsed / max_minutes)``, so a wall-time budget ends the schedule cleanly; offset estimators
at 0.25× the learning rate. Resumable (``OUT/last.pt``); exported as safetensors with the config and a training
note. ``device="cuda"`` with ``amp`` (bf16 autocast) and ``workers`` (batch-generating processes) is the GPU recipe
(``training/ssen/gpu_train.sh``).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F

from ...core.checkpoint import save_safetensors
from ...core.ssen.match import box, luma
from ...core.ssen.model import SSENet, param_count
from .batching import Batcher, Stream
from .data import builtin_photos, folder_samples, photo_samples
from .discriminator import PatchDiscriminator
from .losses import charbonnier, grid_energy, harm
from .options import KINDS, VAL_MODES, TrainOptions
from .validation import evaluate, val_text, validation_cases

log = logging.getLogger(__name__)

__all__ = ["KINDS", "Batcher", "TrainOptions", "train"]


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


def train(opt: TrainOptions, progress=None) -> Path:
    """Run (or resume) training; returns the exported safetensors path."""
    out = Path(opt.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(opt.seed)
    samples, validate_on, source = _data(opt)
    cfg = opt.config()
    model = SSENet(cfg).to(opt.device)
    model.scale_search = opt.scale_search
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
        loader = torch.utils.data.DataLoader(Stream(batcher.samples, opt, step), batch_size=None,
                                             num_workers=opt.workers, prefetch_factor=4, persistent_workers=True,
                                             pin_memory=torch.device(opt.device).type == "cuda")
        stream = iter(loader)
    log.info("SSEN %s, %d parameters; %d training images (%s)", cfg, param_count(model), len(batcher.samples),
             source)
    amp = opt.amp and str(opt.device).startswith("cuda")

    def validate(model: SSENet, final: bool) -> dict:
        """Validation as users run the model (``load_ssen``: the scale search on), whatever training uses."""
        model.scale_search = True
        try:
            return validate_on(model, final)
        finally:
            model.scale_search = opt.scale_search

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
        per = charbonnier(sr, hr_b)  # per sample: the per-kind log below
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
        refs = torch.tensor([k != "self" for k in kinds], device=sr.device) if opt.harm_weight else None
        if refs is not None and bool(refs.any()):
            with torch.no_grad():  # the bar: the same network without the reference
                sr_self = model(lr_b[refs]).float()
            h_loss = harm(sr[refs], sr_self, hr_b[refs])
            loss = loss + opt.harm_weight * h_loss
            per_kind.append(("harm", float(h_loss.detach())))
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
            log.info("val @%d: %s", step, val_text(res))
            export(res)  # the latest weights, loadable while the run goes on
            t0 = time.monotonic()
    save()
    result = validate(model, final=True)
    if result:
        log.info("final val @%d: %s", step, val_text(result))
        (out / "validation.json").write_text(json.dumps(result, indent=1))
    path = export(result)
    log.info("exported %s", path)
    return path
