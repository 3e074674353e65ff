"""Render the README's SSEN pictures from the shipped model on held-out data: ``docs/images/ssen_stereo.jpg``
(before/after crops: LR input, bicubic, SSEN self-similarity, SSEN with the other stereo view as the reference,
ground truth, with Y-PSNR against the ground truth) and ``docs/images/ssen_offsets.jpg`` (the SSEN Offset Map of
the same pair and of a reference shifted by 8 LR pixels).

The data is scikit-image's bundled motorcycle stereo pair, rows ≥ 300 (held out from training, see
``training/ssen/photos.py``): the reference is another photo of the scene taken from another position, not the
ground truth. Needs only the pack's test install (scikit-image ships with ``.[test]``); CPU, about a minute.

    python docs/render_ssen.py
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from aware_restore.core.ssen import load_ssen
from aware_restore.core.ssen.infer import offset_map, super_resolve
from aware_restore.training.ssen.data import make_lr
from aware_restore.training.ssen.metrics import psnr_y
from aware_restore.training.ssen.photos import STEREO_HOLDOUT_ROW
from PIL import Image, ImageDraw, ImageFont

log = logging.getLogger("render_ssen")
OUT = Path(__file__).resolve().parent / "images"
ZOOM = 2
FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


def _font(size: int):
    try:
        return ImageFont.truetype(FONT, size)
    except OSError:
        return ImageFont.load_default()


def _pil(x: torch.Tensor, zoom: int = ZOOM) -> Image.Image:
    a = (x[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
    im = Image.fromarray(a)
    return im.resize((im.width * zoom, im.height * zoom), Image.NEAREST)


def _sheet(panels: list[tuple[Image.Image, str]], cols: int) -> Image.Image:
    w, h = panels[0][0].size
    pad, label = 8, 30
    rows = (len(panels) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label + pad) + pad), (24, 24, 24))
    draw, font = ImageDraw.Draw(sheet), _font(18)
    for i, (im, text) in enumerate(panels):
        x, y = pad + (i % cols) * (w + pad), pad + (i // cols) * (h + label + pad)
        draw.text((x + 2, y + 4), text, fill=(235, 235, 235), font=font)
        sheet.paste(im, (x, y + label))
    return sheet


def main() -> None:
    import skimage.data as skd

    left, right, _ = skd.stereo_motorcycle()
    to_t = lambda a: torch.from_numpy(a[STEREO_HOLDOUT_ROW:].copy()).permute(2, 0, 1)[None].float() / 255
    left, right = to_t(left), to_t(right)
    y, x, h, w = 4, 400, 160, 256
    hr, ref = left[..., y:y + h, x:x + w], right[..., y:y + h, x:x + w]
    lr = make_lr(hr)
    model = load_ssen()
    bic = F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1)
    own = super_resolve(model, lr)
    ster = super_resolve(model, lr, ref)
    lr_big = F.interpolate(lr, scale_factor=4, mode="nearest")

    def tag(name: str, im: torch.Tensor) -> str:
        return f"{name}  {psnr_y(im, hr):.2f} dB"

    panels = [(_pil(lr_big), f"input {lr.shape[-1]}×{lr.shape[-2]} (nearest ×4)"), (_pil(bic), tag("bicubic ×4", bic)),
              (_pil(own), tag("SSEN, no reference", own)), (_pil(ref), "reference: the other stereo view"),
              (_pil(ster), tag("SSEN + stereo reference", ster)), (_pil(hr), "ground truth")]
    OUT.mkdir(parents=True, exist_ok=True)
    _sheet(panels, 3).save(OUT / "ssen_stereo.jpg", quality=90)

    shifted = left[..., y + 32:y + 32 + h, x + 32:x + 32 + w]  # content 8 LR px up-left of where the input has it
    pts_s, heat_s = offset_map(model, lr, ref, step=8)
    pts_8, heat_8 = offset_map(model, lr, shifted, step=8)
    panels = [(_pil(pts_s), "offsets: stereo reference"), (_pil(heat_s), "weight: stereo reference"),
              (_pil(pts_8), "offsets: reference shifted by 8 LR px"), (_pil(heat_8), "weight: shifted reference")]
    _sheet(panels, 2).save(OUT / "ssen_offsets.jpg", quality=90)
    log.info("bicubic %.2f, self %.2f, stereo %.2f dB", psnr_y(bic, hr), psnr_y(own, hr), psnr_y(ster, hr))


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main()
