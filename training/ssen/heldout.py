"""The held-out evaluation protocol for SSEN (issues 11, 21): photos never used in training, references that are
other photographs of the scene — never crops of the ground truth.

Images: ``<photos>/holdout/*.png`` of the prepared photo set (:mod:`.photos`; 7 photos, ~1024 px long side), or
scikit-image's astronaut alone when no photo set is given. Each photo is the *scene*; the ground truth is the
scene at half its resolution (antialiased bicubic), so a reference zoomed in 2× still has real detail. Two
192² HR crops (128² on the 512² astronaut) per image (the most detailed window — highest mean |∇Y| — and the window of median detail
overlapping it by at most half, on a 16-px grid with a 48-px margin); LR = antialiased bicubic ×4 down.
References (:func:`.camera.rephotograph`: similarity transform, lens blur, noise, JPEG — never pixel-identical):

* ``self``        no reference (self-similarity)
* ``zoom{z}``     the scene around the crop (a 256² ground-truth window, off-centre by up to 16 px, rotated by up
                  to ±3°) photographed at z output px per ground-truth px, z = 0.5, 0.67, 1, 1.5, 2
* ``frame{k}``    a hand-held video frame k frames away: the crop's own field of view moved by k × ~1.2 px per
                  frame in a fixed direction, rotated by 0.12° and zoomed by 0.4 % per frame, motion blur, noise,
                  JPEG 85; k = 1, 5, 15
* ``irrelevant``  the ``zoom1`` reference of another photo's crop
* ``partner``     (``stereo_cases``) the motorcycle pair's held-out rows (>= 300), the other view as reference

Real pairs besides (``video_cases``, ``aloe_cases``; Debian ``opencv-doc``, evaluation only): frames 1/5/15 apart
of a real video and the Middlebury *Aloe* stereo pair.

Metrics: Y-PSNR and Y-SSIM (BT.601, 8-bit, border shave 4) and the grid ratio of (SSEN − bicubic)
(:func:`.metrics.grid_ratio`).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from ...core.ssen.resample import bicubic_downscale, bicubic_up
from .camera import rephotograph
from .data import make_lr
from .metrics import grid_ratio, psnr_y, rgb_to_y, ssim_y
from .photos import STEREO_HOLDOUT_ROW

SIZE, MARGIN, STEP = 192, 48, 16
SMALL = 128  # crop side on scenes too small for SIZE
ZOOMS = (0.5, 0.67, 1.0, 1.5, 2.0)
FRAMES = (1, 5, 15)
MODES = (("self",) + tuple(f"zoom{z:g}" for z in ZOOMS) + tuple(f"frame{k}" for k in FRAMES) + ("irrelevant",))
GRID_MODES = ("self", "zoom1", "frame1", "irrelevant")
LABELS = {"self": "self-similarity (no reference)", "irrelevant": "irrelevant photo",
          **{f"zoom{z:g}": f"same scene, {z:g}× zoom" for z in ZOOMS},
          **{f"frame{k}": f"simulated video frame {k} apart" for k in FRAMES}}


def load_png(path: Path) -> torch.Tensor:
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB"))
    return torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255


def holdout_images(photos: str | Path | None = None) -> dict[str, torch.Tensor]:
    """Held-out photos ``[3,H,W]`` in [0,1] by name."""
    if photos is None:
        import skimage.data as skd

        a = skd.astronaut()
        return {"skimage_astronaut": torch.from_numpy(a.copy()).permute(2, 0, 1).float() / 255}
    files = sorted((Path(photos) / "holdout").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no held-out photos in {photos}/holdout (run prepare_photos first)")
    return {p.stem: load_png(p) for p in files}


def choose_crops(img: torch.Tensor, size: int = SIZE, margin: int = MARGIN, step: int = STEP) -> list[tuple[int, int]]:
    y = rgb_to_y(img[None])[0, 0]
    g = (y[1:, :-1] - y[:-1, :-1]).abs() + (y[:-1, 1:] - y[:-1, :-1]).abs()
    H, W = img.shape[-2:]
    cands = [(float(g[yy:yy + size, xx:xx + size].mean()), yy, xx)
             for yy in range(margin, H - size - margin + 1, step) for xx in range(margin, W - size - margin + 1, step)]
    if not cands:
        raise ValueError(f"a {W}×{H} photo is too small for {size}² crops with a {margin}-px margin")
    cands.sort()
    best, median = cands[-1], cands[len(cands) // 2][0]

    def overlap(a, b) -> float:
        return max(0, size - abs(a[1] - b[1])) * max(0, size - abs(a[2] - b[2])) / size ** 2

    second = next((c for c in sorted(cands, key=lambda c: abs(c[0] - median)) if overlap(c, best) <= 0.5), None)
    return [(best[1], best[2])] + ([(second[1], second[2])] if second else [])


def ground_truth(scene: torch.Tensor) -> torch.Tensor:
    """The ground-truth image of a scene: half its resolution (antialiased bicubic,
    :func:`...core.ssen.resample.bicubic_downscale`), ``[3,H/2,W/2]``."""
    return bicubic_downscale(scene, 2).clamp(0, 1)


def _references(scene: torch.Tensor, y: int, x: int, seed: int, size: int = SIZE) -> dict:
    g = torch.Generator().manual_seed(seed)

    def u(a: float) -> float:
        return float(torch.rand(1, generator=g)) * 2 * a - a

    c = (y + size / 2, x + size / 2)
    refs: dict = {"self": None}
    for i, z in enumerate(ZOOMS):
        centre = (c[0] + u(16), c[1] + u(16))
        refs[f"zoom{z:g}"] = rephotograph(scene, centre, (size + 64, size + 64), z, angle=u(3), seed=seed * 31 + i)[0]
    direction = u(math.pi)
    for k in FRAMES:
        d = 1.2 * k
        centre = (c[0] + d * math.sin(direction), c[1] + d * math.cos(direction))
        refs[f"frame{k}"] = rephotograph(scene, centre, (size, size), 1 + 0.004 * k, angle=0.12 * k,
                                         seed=seed * 31 + 10 + k, motion=1.5, noise=0.012, quality=85)[0]
    return refs


def cases(images: dict[str, torch.Tensor], crops: int = 2) -> list[dict]:
    """Every (photo, crop) with its HR, LR and references by mode (the photos are the scenes)."""
    out = []
    for pi, (name, scene) in enumerate(images.items()):
        gt = ground_truth(scene)
        size = SIZE if min(gt.shape[-2:]) >= SIZE + 2 * MARGIN else SMALL  # scikit-image's 512² astronaut
        for ci, (y, x) in enumerate(choose_crops(gt, size)[:crops]):
            hr = gt[:, y:y + size, x:x + size]
            out.append({"name": f"{name}#{ci}", "image": name, "yx": (y, x), "hr": hr, "lr": make_lr(hr),
                        "refs": _references(scene, y, x, 1000 * pi + ci, size)})
    for i, c in enumerate(out):  # irrelevant: the 1× reference of the next photo's crop
        other = next((o for o in out[i + 1:] + out[:i] if o["image"] != c["image"]), None)
        c["refs"]["irrelevant"] = other["refs"]["zoom1"] if other else torch.flip(c["refs"]["zoom1"], (-1, -2))
    return out


def stereo_cases(photos: str | Path) -> list[dict]:
    """The motorcycle pair's held-out rows: 192×256 crops of the left view, the right view as the reference."""
    left = load_png(Path(photos) / "stereo" / "motorcycle_left.png")[:, STEREO_HOLDOUT_ROW:]
    right = load_png(Path(photos) / "stereo" / "motorcycle_right.png")[:, STEREO_HOLDOUT_ROW:]
    out = []
    for ci, x in enumerate((160, 448)):
        hr = left[:, 4:196, x:x + 256]
        out.append({"name": f"motorcycle_left_bottom#{ci}", "image": "motorcycle_left_bottom", "yx": (4, x),
                    "hr": hr, "lr": make_lr(hr), "refs": {"self": None, "partner": right[:, 4:196, x:x + 256]}})
    return out


def video_cases(pairs: str | Path) -> list[dict]:
    """Real video (:func:`.photos.prepare_real_pairs`: ``vtest.avi``, a static camera over a plaza, DivX-compressed):
    for each held-out clip start t, two 192² crops of frame t (most detailed, median detail) as the ground truth
    and the same window grown by 32 px in frames t+1, t+5, t+15 as the references (``frame{k}``)."""
    from .photos import VIDEO_STARTS

    root = Path(pairs) / "video"
    if not root.is_dir():
        return []
    out = []
    for t in VIDEO_STARTS:
        frame = load_png(root / f"vtest_{t:04d}.png")
        for ci, (y, x) in enumerate(choose_crops(frame)):
            hr = frame[:, y:y + SIZE, x:x + SIZE]
            refs: dict = {"self": None}
            for k in FRAMES:
                other = load_png(root / f"vtest_{t + k:04d}.png")
                refs[f"frame{k}"] = other[:, y - 32:y + SIZE + 32, x - 32:x + SIZE + 32]
            out.append({"name": f"vtest@{t}#{ci}", "image": f"vtest@{t}", "yx": (y, x), "hr": hr, "lr": make_lr(hr),
                        "refs": refs})
    return out


def aloe_cases(pairs: str | Path) -> list[dict]:
    """The Middlebury *Aloe* stereo pair (:func:`.photos.prepare_real_pairs`) at half resolution: two 192² crops of
    the left view, the right view's rows of the crop from 128 px left of it to 32 px right of it as the reference
    (``partner``)."""
    root = Path(pairs) / "stereo"
    if not (root / "aloe_left.png").is_file():
        return []
    left, right = (ground_truth(load_png(root / f"aloe_{s}.png")) for s in ("left", "right"))
    out = []
    for ci, (y, x) in enumerate(choose_crops(left)):
        hr = left[:, y:y + SIZE, x:x + SIZE]
        ref = right[:, y:y + SIZE, max(0, x - 128):x + SIZE + 32]
        out.append({"name": f"aloe#{ci}", "image": "aloe", "yx": (y, x), "hr": hr, "lr": make_lr(hr),
                    "refs": {"self": None, "partner": ref}})
    return out


@torch.no_grad()
def evaluate(model, cs: list[dict], modes: tuple[str, ...] | None = None) -> dict:
    """Per-crop and mean Y-PSNR / SSIM for bicubic and every reference mode, and grid ratios (GRID_MODES)."""
    model.eval()
    dev = next(model.parameters()).device
    rows = {}
    for c in cs:
        lr, hr = c["lr"][None], c["hr"][None]
        bic = bicubic_up(lr)
        row = {"bicubic": psnr_y(bic, hr), "bicubic_ssim": ssim_y(bic, hr),
               "true_residual_grid": grid_ratio(hr, bic)}
        for mode, ref in c["refs"].items():
            if modes and mode not in modes:
                continue
            sr = model(lr.to(dev), None if ref is None else ref[None].to(dev)).float().clamp(0, 1).cpu()
            row[mode] = psnr_y(sr, hr)
            row[mode + "_ssim"] = ssim_y(sr, hr)
            if mode in GRID_MODES or mode == "partner":
                row[mode + "_grid"] = grid_ratio(sr, bic)
        rows[c["name"]] = row
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    mean = {k: float(np.mean([r[k] for r in rows.values() if k in r])) for k in keys}
    max_grid = {k: float(np.max([r[k] for r in rows.values() if k in r])) for k in keys if k.endswith("_grid")}
    return {"rows": rows, "mean": mean, "max_grid": max_grid}


def summary(res: dict) -> str:
    m = res["mean"]
    parts = [f"bicubic {m['bicubic']:.2f}"]
    if "self" in m:
        s = m["self"]
        parts.append(f"self {s:.2f} ({s - m['bicubic']:+.2f} vs bicubic)")
        parts += [f"{k} {m[k] - s:+.2f}" for k in MODES[1:] + ("partner",) if k in m]
    parts.append("max grid " + " ".join(f"{k[:-5]}={v:.1f}" for k, v in res["max_grid"].items()))
    return "; ".join(parts)


def worst_vs_self(res: dict, mode: str) -> float:
    """The lowest per-crop gain of ``mode`` over self-similarity (dB)."""
    return min((r[mode] - r["self"] for r in res["rows"].values() if mode in r), default=float("nan"))


def table(res: dict, stereo: dict | None = None, video: dict | None = None, aloe: dict | None = None) -> str:
    """One Markdown table: Y-PSNR (dB), the gain over self-similarity (mean and worst crop) and SSIM per mode; the
    real video (``video_cases``) and the second stereo pair (``aloe_cases``) as rows of their own."""
    m = res["mean"]
    lines = ["| input to SSEN | Y-PSNR (dB) | Δ vs self | worst crop Δ | SSIM |", "|---|---|---|---|---|",
             (f"| bicubic (no SSEN) | {m['bicubic']:.2f} | {m['bicubic'] - m['self']:+.2f} | | "
             f"{m['bicubic_ssim']:.4f} |")]
    for k in MODES:
        if k in m:
            worst = worst_vs_self(res, k)
            worst = "" if k == "self" or math.isnan(worst) else f"{worst:+.2f}"
            lines.append(f"| {LABELS[k]} | {m[k]:.2f} | {m[k] - m['self']:+.2f} | {worst} | {m[k + '_ssim']:.4f} |")
    if stereo:
        s = stereo["mean"]
        lines.append(f"| stereo partner (motorcycle, 192×256; self {s['self']:.2f}) | {s['partner']:.2f} | "
                     f"{s['partner'] - s['self']:+.2f} | {worst_vs_self(stereo, 'partner'):+.2f} | "
                     f"{s['partner_ssim']:.4f} |")
    if video:
        v = video["mean"]
        for k in FRAMES:
            lines.append(f"| real video (vtest.avi), frame {k} apart; self {v['self']:.2f} | {v[f'frame{k}']:.2f} | "
                         f"{v[f'frame{k}'] - v['self']:+.2f} | {worst_vs_self(video, f'frame{k}'):+.2f} | "
                         f"{v[f'frame{k}_ssim']:.4f} |")
    if aloe:
        a = aloe["mean"]
        lines.append(f"| stereo partner (Aloe, 192²; self {a['self']:.2f}) | {a['partner']:.2f} | "
                     f"{a['partner'] - a['self']:+.2f} | {worst_vs_self(aloe, 'partner'):+.2f} | "
                     f"{a['partner_ssim']:.4f} |")
    grids = dict(res["max_grid"])
    for extra in (stereo, video, aloe):
        for k, v in (extra or {}).get("max_grid", {}).items():
            grids[k] = max(v, grids.get(k, 0.0))
    lines.append("")
    lines.append("Grid ratio, worst crop: " + ", ".join(f"{k[:-5]} {v:.2f}" for k, v in grids.items()
                                                        if k != "true_residual_grid"))
    return "\n".join(lines)
