"""Acceptance of the SHIPPED SSEN model on held-out photos (never seen in training): scikit-image's astronaut
and the bottom rows (>= 300) of its motorcycle stereo pair, bicubic ×4 degradation, Y-PSNR with the border shaved
by 4. A model that ignores its reference cannot pass: the oracle reference (the ground-truth HR) must beat an
irrelevant one, and an irrelevant reference must not hurt compared with self-similarity mode."""

from __future__ import annotations

import pytest
import torch

from aware_restore.core.ssen import load_ssen
from aware_restore.training.ssen.data import bicubic_down, builtin_photos
from aware_restore.training.ssen.metrics import psnr_y

# (image, top, left) of 128×128 HR crops (LR 32×32); motorcycle rows are relative to row 300
CROPS = (("astronaut", 40, 150), ("astronaut", 300, 300), ("motorcycle_left_bottom", 24, 200),
         ("motorcycle_left_bottom", 40, 480))
SIZE = 128
ORACLE_MARGIN_DB = 0.3   # oracle reference over irrelevant reference
IRRELEVANT_TOL_DB = 0.1  # |irrelevant - self-similarity|
BICUBIC_MARGIN_DB = 0.3  # self-similarity SR over bicubic
TILED_MIN_DB = 40.0      # tiled vs untiled (PSNR between the two results)


@pytest.fixture(scope="module")
def scores() -> dict[str, float]:
    holdout = {s.name: s for s in builtin_photos("holdout")}
    model = load_ssen()
    hrs, partners = [], []
    for name, y, x in CROPS:
        s = holdout[name]
        hrs.append(s.hr[:, y:y + SIZE, x:x + SIZE])
        partners.append(s.refs[0][:, y:y + SIZE, x:x + SIZE] if s.refs else None)
    hr = torch.stack(hrs)
    lr = bicubic_down(hr)
    irrelevant = torch.roll(hr, 2, dims=0)  # an astronaut crop for a motorcycle crop and vice versa
    res: dict[str, list[float]] = {}
    with torch.no_grad():
        outs = {"bicubic": torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False),
                "self": model(lr), "oracle": model(lr, hr), "irrelevant": model(lr, irrelevant)}
        idx = [i for i, p in enumerate(partners) if p is not None]
        partner = model(lr[idx], torch.stack([partners[i] for i in idx]))
    for mode, out in outs.items():
        res[mode] = [psnr_y(out[i:i + 1], hr[i:i + 1]) for i in range(len(CROPS))]
    res["partner"] = [psnr_y(partner[j:j + 1], hr[i:i + 1]) for j, i in enumerate(idx)]
    res["irrelevant_on_stereo"] = [res["irrelevant"][i] for i in idx]
    return {k: sum(v) / len(v) for k, v in res.items()}


def test_shipped_model_beats_bicubic(scores):
    assert scores["self"] > scores["bicubic"] + BICUBIC_MARGIN_DB, scores


def test_oracle_reference_beats_irrelevant_reference(scores):
    assert scores["oracle"] - scores["irrelevant"] >= ORACLE_MARGIN_DB, scores


def test_irrelevant_reference_is_harmless(scores):
    assert abs(scores["irrelevant"] - scores["self"]) <= IRRELEVANT_TOL_DB, scores


def test_stereo_partner_is_not_worse_than_irrelevant(scores):
    assert scores["partner"] >= scores["irrelevant_on_stereo"] - 0.05, scores


def test_tiled_matches_untiled_on_a_photo():
    """The non-local blocks are global, so tiles see less context; with overlap the blended result stays close
    to the untiled one (and is identical when the image fits in one tile)."""
    from aware_restore.core.ssen.infer import super_resolve

    hr = builtin_photos("holdout")[0].hr[None, :, 200:392, 200:392]
    lr = bicubic_down(hr)
    model = load_ssen()
    whole = super_resolve(model, lr, hr)
    assert torch.equal(whole, super_resolve(model, lr, hr, tile=48))
    tiled = super_resolve(model, lr, hr, tile=32, overlap=16)
    assert psnr_y(tiled, whole, shave=0) >= TILED_MIN_DB
