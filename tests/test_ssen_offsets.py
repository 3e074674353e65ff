"""The offset map shows the displacement (issue 11): with the SHIPPED model, for a reference whose content lies
s LR pixels away, the median displacement over textured areas is within 1 px of s — on scikit-image's astronaut,
a held-out photo — and the map (``SSENOffsetMap``'s picture) draws each footprint there."""

from __future__ import annotations

import pytest
import torch
from aware_restore.core.ssen import load_ssen
from aware_restore.core.ssen.infer import displacement, offset_map
from aware_restore.core.ssen.match import box, luma
from aware_restore.training.ssen.data import make_lr
from aware_restore.training.ssen.heldout import choose_crops, holdout_images

SHIFTS = ((1, 1), (2, 2), (4, 4), (8, 8), (0, 6), (-5, 3))  # (dy, dx) in LR pixels
TOLERANCE = 1.0


@pytest.fixture(scope="module")
def setup():
    img = holdout_images()["skimage_astronaut"]
    return load_ssen(), img, choose_crops(img)


def _textured(lr: torch.Tensor, margin: int) -> torch.Tensor:
    """Positions whose 5×5 luma std is above the crop's median, away from the strip the reference lacks."""
    y = luma(lr)
    sd = (box(y * y, 5) - box(y, 5) ** 2).clamp_min(0).sqrt()
    m = sd > sd.median()
    m[..., :margin, :] = m[..., -margin:, :] = False
    m[..., :, :margin] = m[..., :, -margin:] = False
    return m[0, 0]


@pytest.mark.parametrize("crop", [0, 1])
def test_median_displacement_is_the_shift(setup, crop):
    model, img, crops = setup
    y, x = crops[crop]
    hr = img[None, :, y:y + 256, x:x + 256]
    lr = make_lr(hr)
    for sy, sx in SHIFTS:
        ref = img[None, :, y - 4 * sy:y - 4 * sy + 256, x - 4 * sx:x - 4 * sx + 256]  # content s further on
        disp, weight = displacement(model, lr, ref)
        m = _textured(lr, 3 + max(abs(sy), abs(sx)))
        med = disp[0][:, m].median(1).values
        assert abs(float(med[0]) - sy) <= TOLERANCE and abs(float(med[1]) - sx) <= TOLERANCE, (sy, sx, med)
        assert float(weight[0, 0][m].mean()) > 0.3  # and the reference is used there


def test_offset_map_draws_the_footprint_at_the_displacement(setup):
    model, img, crops = setup
    y, x = crops[0]
    hr = img[None, :, y:y + 128, x:x + 128]
    lr = make_lr(hr)
    sy, sx = 2, 3
    ref = img[None, :, y - 4 * sy:y - 4 * sy + 128, x - 4 * sx:x - 4 * sx + 128]
    points, _ = offset_map(model, lr, ref, step=8)
    total = hits = 0
    for yy in range(4, 32, 8):
        for xx in range(4, 32, 8):
            if yy + sy >= 29 or xx + sx >= 29:
                continue  # the reference lacks that content
            total += 1
            py, px = round(4 * (yy + sy) + 1.5), round(4 * (xx + sx) + 1.5)  # where the content really is
            dot = points[0, :, py, px]
            hits += int(abs(float(dot[2]) - 0.1) < 1e-6 and abs(float(dot[0] + dot[1]) - 1) < 1e-5)
    assert total >= 6 and hits >= total - 2, (hits, total)
