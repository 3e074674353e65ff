"""The scale- and rotation-aware match (core/ssen/scale.py): a reference at another zoom or slightly rotated is
found at the right scale, brought onto the output grid, and judged by the similarity gate; unrelated references
find nothing; the masked NCC equals a direct computation; large references cost memory by the output's size."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from aware_restore.core.ssen import load_ssen
from aware_restore.core.ssen.match import ncc
from aware_restore.core.ssen.resample import bicubic_downscale
from aware_restore.core.ssen.scale import global_candidates, masked_ncc
from aware_restore.training.ssen.camera import rephotograph


def _scene(seed: int = 3, size: int = 512) -> torch.Tensor:
    """A textured scene: smooth random colours plus finer random detail (multi-scale, not periodic)."""
    g = torch.Generator().manual_seed(seed)
    out = 0
    for k in (8, 24, 64):
        out = out + F.interpolate(torch.rand(1, 3, k, k, generator=g), size=(size, size), mode="bicubic",
                                  align_corners=False) / 3
    return out.clamp(0, 1)[0]


@pytest.fixture(scope="module")
def scene() -> torch.Tensor:
    return _scene()


def test_masked_ncc_equals_direct_computation():
    g = torch.Generator().manual_seed(0)
    img, tmpl = torch.rand(12, 14, generator=g), torch.rand(5, 6, generator=g)
    mask = torch.ones_like(img)
    mask[:, :3] = 0
    (score,) = masked_ncc(img, mask, [tmpl])
    for ty, tx in ((0, 3), (4, 5), (-2, 6), (7, 8)):
        y0, x0 = max(ty, 0), max(tx, 0)
        y1, x1 = min(ty + 5, 12), min(tx + 6, 14)
        m = mask[y0:y1, x0:x1].bool()
        a = img[y0:y1, x0:x1][m]
        b = tmpl[y0 - ty:y1 - ty, x0 - tx:x1 - tx][m]
        if m.sum() < 15:
            assert float(score[ty, tx]) == -1.0
            continue
        a, b = a - a.mean(), b - b.mean()
        eps = m.sum() * (2 / 255) ** 2
        want = (a * b).sum() / torch.sqrt(((a * a).sum() + eps) * ((b * b).sum() + eps))
        assert abs(float(score[ty, tx]) - float(want)) < 1e-4


def test_masked_ncc_stays_on_the_input_device():
    """The global search runs where the model is (super_resolve moves the LR image and the reference there): no
    CPU tensor may enter the score maps (on CUDA the overlap threshold on the host raised a device mismatch).
    The meta device stands in for an accelerator on a CPU-only machine."""
    img, tmpl = torch.rand(12, 14, device="meta"), torch.rand(5, 6, device="meta")
    (score,) = masked_ncc(img, torch.ones_like(img), [tmpl])
    assert score.device.type == "meta" and tuple(score.shape) == (16, 19)


@pytest.mark.parametrize(("zoom", "angle"), [(0.5, 0.0), (2.0, 0.0), (0.67, 3.0), (1.5, -4.0)])
def test_a_zoomed_or_rotated_reference_is_found_at_its_scale(scene, zoom, angle):
    """The scene at half resolution is the ground truth; the reference photographs a larger window around the
    crop at ``zoom`` (0.5×–2×), rotated by ``angle``: the match picks that scale and the aligned reference
    agrees with the ground truth at the input's scale."""
    gt = F.interpolate(scene[None], size=(256, 256), mode="bicubic", align_corners=False, antialias=True)
    hr = gt[..., 64:192, 64:192]
    lr = bicubic_downscale(hr).clamp(0, 1)
    ref = rephotograph(scene, (131, 125), (176, 176), zoom, angle=angle, seed=1)
    cands = global_candidates(lr, ref)
    assert cands, "no candidate"
    best = max(cands, key=lambda c: c.score)
    assert abs(math.log2(best.zoom / zoom)) < 0.15, (best.zoom, zoom)
    assert abs(best.angle - angle) < 2.5, (best.angle, angle)
    m = load_ssen().ssen.match(lr, ref)
    inner = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    assert abs(math.log2(float(m.zoom[inner].median()) / zoom)) < 0.15
    assert float(ncc(bicubic_downscale(m.ref).mean(1, keepdim=True), lr.mean(1, keepdim=True))[inner].median()) > 0.9
    assert float(m.gate[inner].mean()) > 0.6


def test_an_unrelated_reference_is_gated_off(scene):
    gt = F.interpolate(scene[None], size=(256, 256), mode="bicubic", align_corners=False, antialias=True)
    lr = bicubic_downscale(gt[..., 64:192, 64:192]).clamp(0, 1)
    other = rephotograph(_scene(seed=9), (128, 128), (176, 176), 1.0, seed=2)
    m = load_ssen().ssen.match(lr, other)
    assert float(m.gate.mean()) < 0.05


def test_a_large_reference_is_searched_whole():
    """A 1024² reference (the whole scene at twice the ground truth's resolution) for a 32² input: found at 2×,
    with the global search on ≤ 64-px images and the sampling on the part of the reference the output maps to
    (time and memory at 512² → 2048²: benchmarks/bench_ssen.py)."""
    big = _scene(seed=4, size=1024)
    gt = F.interpolate(big[None], size=(512, 512), mode="bicubic", align_corners=False, antialias=True)
    lr = bicubic_downscale(gt[..., 300:428, 150:278]).clamp(0, 1)
    m = load_ssen().ssen.match(lr, big[None])
    assert m.ref.shape == (1, 3, 128, 128)
    assert abs(math.log2(float(m.zoom.median()) / 2.0)) < 0.15
    assert float(m.gate.mean()) > 0.6
