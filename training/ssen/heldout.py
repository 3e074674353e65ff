"""The held-out evaluation protocol for SSEN (issue 11): photos never used in training.

Images: ``<photos>/holdout/*.png`` of the prepared photo set (:mod:`.photos`; 7 photos), or scikit-image's
astronaut alone when no photo set is given. Two 256² HR crops per image, chosen deterministically among
positions on a 32-px grid with a 64-px margin (so every shifted or larger reference stays inside the photo):
the most detailed window (highest mean |∇Y|) and the window of median detail overlapping it by at most half.
LR = antialiased bicubic ×4 down. Reference modes per crop:

* ``self``       no reference (self-similarity)
* ``aligned``    the ground-truth HR crop itself
* ``shift{s}``   the HR window displaced by (-s, -s): the target's content lies s HR px further down and right in
                 the reference (s/4 LR px), for s in 4, 8, 16, 32
* ``larger``     the 384² window centred on the target (contains it; the model resizes it to 256²: scale 2/3)
* ``irrelevant`` the most detailed crop of the next held-out photo (a single photo: its crop rotated by 180°)

Metrics: Y-PSNR and Y-SSIM (BT.601, 8-bit, border shave 4) and the grid ratio of (SSEN − bicubic)
(:func:`.metrics.grid_ratio`). ``stereo_cases`` adds the motorcycle pair's held-out rows (>= 300) with the
other view as the reference (192×256 crops: only 200 rows are held out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import bicubic_down
from .metrics import grid_ratio, psnr_y, rgb_to_y, ssim_y
from .photos import STEREO_HOLDOUT_ROW

SIZE, MARGIN = 256, 64
SHIFTS = (4, 8, 16, 32)
MODES = ("self", "aligned") + tuple(f"shift{s}" for s in SHIFTS) + ("larger", "irrelevant")
GRID_MODES = ("self", "aligned", "shift8", "irrelevant")


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


def choose_crops(img: torch.Tensor, size: int = SIZE, margin: int = MARGIN, step: int = 32) -> list[tuple[int, int]]:
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


def cases(images: dict[str, torch.Tensor]) -> list[dict]:
    """Every (photo, crop) with its HR, LR and references by mode."""
    out = []
    for name, img in images.items():
        for ci, (y, x) in enumerate(choose_crops(img)):
            hr = img[:, y:y + SIZE, x:x + SIZE]
            refs = {"self": None, "aligned": hr}
            for s in SHIFTS:
                refs[f"shift{s}"] = img[:, y - s:y - s + SIZE, x - s:x - s + SIZE]
            refs["larger"] = img[:, y - MARGIN:y + SIZE + MARGIN, x - MARGIN:x + SIZE + MARGIN]
            out.append({"name": f"{name}#{ci}", "image": name, "yx": (y, x), "hr": hr, "lr": bicubic_down(hr),
                        "refs": refs})
    for i, c in enumerate(out):  # irrelevant: the most detailed crop of the next photo
        other = next((o for o in out[i + 1:] + out[:i] if o["image"] != c["image"]), None)
        c["refs"]["irrelevant"] = other["hr"] if other else torch.flip(c["hr"], (-1, -2))
    return out


def stereo_cases(photos: str | Path) -> list[dict]:
    """The motorcycle pair's held-out rows: 192×256 crops of the left view, the right view as the reference."""
    left = load_png(Path(photos) / "stereo" / "motorcycle_left.png")[:, STEREO_HOLDOUT_ROW:]
    right = load_png(Path(photos) / "stereo" / "motorcycle_right.png")[:, STEREO_HOLDOUT_ROW:]
    out = []
    for ci, x in enumerate((160, 448)):
        hr = left[:, 4:196, x:x + 256]
        out.append({"name": f"motorcycle_left_bottom#{ci}", "image": "motorcycle_left_bottom", "yx": (4, x),
                    "hr": hr, "lr": bicubic_down(hr), "refs": {"self": None, "partner": right[:, 4:196, x:x + 256]}})
    return out


@torch.no_grad()
def evaluate(model, cs: list[dict], modes: tuple[str, ...] | None = None) -> dict:
    """Per-crop and mean Y-PSNR / SSIM for bicubic and every reference mode, and grid ratios (GRID_MODES)."""
    model.eval()
    dev = next(model.parameters()).device
    rows = {}
    for c in cs:
        lr, hr = c["lr"][None], c["hr"][None]
        bic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
        row = {"bicubic": psnr_y(bic, hr), "bicubic_ssim": ssim_y(bic, hr),
               "true_residual_grid": grid_ratio(hr, bic)}
        for mode, ref in c["refs"].items():
            if modes and mode not in modes:
                continue
            sr = model(lr.to(dev), None if ref is None else ref[None].to(dev)).float().clamp(0, 1).cpu()
            row[mode] = psnr_y(sr, hr)
            row[mode + "_ssim"] = ssim_y(sr, hr)
            if mode in GRID_MODES:
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


def table(res: dict, stereo: dict | None = None) -> str:
    """A Markdown table of the means: Y-PSNR (dB) and SSIM per mode, and the gain over self-similarity."""
    m = res["mean"]
    lines = ["| input to SSEN | Y-PSNR (dB) | Δ vs self | SSIM |", "|---|---|---|---|",
             f"| bicubic (no SSEN) | {m['bicubic']:.2f} | {m['bicubic'] - m['self']:+.2f} | {m['bicubic_ssim']:.4f} |"]
    label = {"self": "self-similarity (no reference)", "aligned": "aligned ground truth",
             "larger": "384² crop containing the target", "irrelevant": "irrelevant photo"}
    for k in MODES:
        if k in m:
            name = label[k] if k in label else f"ground truth shifted by {k[5:]} px ({int(k[5:]) // 4} LR px)"
            lines.append(f"| {name} | {m[k]:.2f} | {m[k] - m['self']:+.2f} | {m[k + '_ssim']:.4f} |")
    if stereo:
        s = stereo["mean"]
        lines.append(f"| stereo partner (motorcycle, 192×256; self {s['self']:.2f}) | {s['partner']:.2f} | "
                     f"{s['partner'] - s['self']:+.2f} | {s['partner_ssim']:.4f} |")
    return "\n".join(lines)
