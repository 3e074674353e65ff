"""Degradation map, router, fidelity check and their nodes (issue 20).

The map's mechanics run with a deterministic probe (``tests/auto_probe.py``) that has DA-CLIP's interface, since
the released weights cannot be downloaded here; the real-weight path runs end to end on the tiny random kit."""

from __future__ import annotations

import json

import pytest
import torch
from auto_probe import ProbeDaclip, left_noisy_right_hazy
from aware_restore.core.auto import (
    MAP_LABELS,
    FidelityThresholds,
    Thresholds,
    decide,
    degradation_map,
    measure,
    most_faithful,
    plan,
    preview,
)
from aware_restore.core.errors import InputError


@pytest.fixture()
def short_irsde(monkeypatch):
    """A 2-step IR-SDE schedule (the route, blending and reporting do not depend on the 100 steps)."""
    from aware_restore.core.irsde.sde import IRSDE

    monkeypatch.setattr(IRSDE, "timesteps", lambda self: [2, 1])


# ------------------------------------------------------------------------------------------------ map
def test_map_follows_the_layout_without_seams():
    probe = ProbeDaclip(image_size=32)
    x = left_noisy_right_hazy(96, 256)
    seen = []
    dmap = degradation_map(probe, x, window_batch=4, progress=lambda d, t: seen.append((d, t)))
    assert dmap.probs.shape == (1, len(MAP_LABELS), 96, 256) and dmap.window == 32 and dmap.overlap == 16
    top = dmap.masks().argmax(dim=1)[0]
    expected = torch.full_like(top, MAP_LABELS.index("hazy"))
    expected[:, :128] = MAP_LABELS.index("noisy")
    match = float((top == expected).float().mean())
    assert match >= 0.95, match
    # probabilities sum to 1 everywhere; masks are [B,H,W] in [0,1]
    assert torch.allclose(dmap.probs.sum(dim=1), torch.ones(1, 96, 256), atol=1e-5)
    noisy = dmap.mask("noisy")
    assert noisy.shape == (1, 96, 256) and 0 <= float(noisy.min()) and float(noisy.max()) <= 1
    # no steps at window seams: adjacent pixels differ by at most 1/(overlap+1) (a hard per-window map: 1.0)
    for lbl in ("noisy", "hazy", "clean"):
        m = dmap.mask(lbl)[0]
        step = max(float((m[:, 1:] - m[:, :-1]).abs().max()), float((m[1:] - m[:-1]).abs().max()))
        assert step <= 1 / 17 + 1e-4, (lbl, step)
    # inside each half the window seams (every 16 px) leave the map flat
    m = dmap.mask("noisy")[0]
    assert float((m[:, 1:100] - m[:, :99]).abs().max()) < 1e-4
    # memory: at most window_batch windows per model call; progress reaches its total
    assert probe.max_batch <= 4
    assert seen[-1][0] == seen[-1][1]


def test_map_is_batch_safe_and_handles_small_odd_images():
    probe = ProbeDaclip(image_size=32)
    a, b = left_noisy_right_hazy(40, 72, seed=1), left_noisy_right_hazy(40, 72, seed=2).flip(-1)
    both = degradation_map(probe, torch.cat([a, b]), window_batch=3)
    one = degradation_map(probe, b, window_batch=7)
    assert torch.allclose(both.probs[1:], one.probs, atol=1e-6)
    assert torch.allclose(both.global_probs[1:], one.global_probs, atol=1e-6)
    tiny = degradation_map(probe, torch.rand(1, 3, 9, 300))  # smaller than a window on one side
    assert tiny.probs.shape[-2:] == (9, 300)
    gray = degradation_map(probe, torch.rand(1, 1, 40, 40))
    assert gray.probs.shape[:2] == (1, len(MAP_LABELS))
    big = degradation_map(probe, torch.rand(1, 3, 64, 130), max_map_side=32)
    assert max(big.probs.shape[-2:]) <= 33 and big.masks().shape[-2:] == (64, 130)
    pv = preview(both, torch.cat([a, b]))
    assert pv.shape[:2] == (2, 3) and pv.shape[-1] == 72 and pv.shape[-2] > 40  # legend strip beneath
    with pytest.raises(InputError, match="not finite"):
        degradation_map(probe, torch.full((1, 3, 16, 16), float("nan")))
    with pytest.raises(InputError, match="window"):
        degradation_map(probe, a, window=4)


# ------------------------------------------------------------------------------------------------ router
def _probs(**p) -> torch.Tensor:
    v = torch.zeros(len(MAP_LABELS))
    for k, x in p.items():
        v[MAP_LABELS.index(k.replace("_", "-"))] = x
    return v


ROUTER_CASES = [  # (case, probabilities, size, seesr available, expected route)
    ("clean photo", _probs(clean=0.9, noisy=0.05), (512, 512), False, "pass"),
    ("noisy", _probs(noisy=0.8, clean=0.1), (512, 512), False, "irsde"),
    ("hazy", _probs(hazy=0.6, clean=0.3), (512, 768), True, "irsde"),
    ("jpeg", _probs(jpeg_compressed=0.5, clean=0.4), (600, 400), False, "irsde"),
    ("low light", _probs(low_light=0.7), (512, 512), True, "irsde"),
    ("rainy", _probs(rainy=0.9), (512, 512), False, "irsde"),
    ("snowy + shadow", _probs(snowy=0.4, shadowed=0.4), (512, 512), False, "irsde"),
    ("blur with SeeSR", _probs(motion_blurry=0.8), (512, 512), True, "seesr"),
    ("blur without SeeSR", _probs(motion_blurry=0.8), (512, 512), False, "irsde"),
    ("low resolution with SeeSR", _probs(clean=0.9), (128, 160), True, "seesr"),
    ("low resolution, noisy, no SeeSR", _probs(noisy=0.9), (128, 160), False, "irsde"),
    ("low resolution, clean, no SeeSR", _probs(clean=0.9), (128, 160), False, "pass"),
    ("weak degradation", _probs(noisy=0.3, hazy=0.3, clean=0.4), (512, 512), True, "pass"),
]


@pytest.mark.parametrize("case", ROUTER_CASES, ids=[c[0] for c in ROUTER_CASES])
def test_router_table(case):
    _name, probs, size, seesr, expected = case
    d = decide(MAP_LABELS, probs, size, Thresholds(), seesr)
    assert d.route == expected, d.reason
    assert d.reason and d.to_dict()["route"] == expected
    if expected == "pass":
        assert d.strength == 0
    else:
        assert 0.5 <= d.strength <= 1


def test_router_strength_thresholds_and_regions():
    t = Thresholds()
    assert decide(MAP_LABELS, _probs(noisy=0.36), (512, 512), t).strength == pytest.approx(0.5, abs=0.02)
    assert decide(MAP_LABELS, _probs(noisy=0.95), (512, 512), t).strength == 1.0
    assert decide(MAP_LABELS, _probs(noisy=0.5), (512, 512), Thresholds(degraded=0.6)).route == "pass"
    with pytest.raises(InputError, match="full"):
        Thresholds(degraded=0.8, full=0.5)
    # the map counts: a half-noisy image routes to IR-SDE and restores only the noisy half (feathered)
    probe = ProbeDaclip(image_size=32)
    x = left_noisy_right_hazy(64, 256)
    dmap = degradation_map(probe, x)
    p = plan(dmap, Thresholds(degraded=0.3, region=0.5, feather=8))
    d = p.decisions[0]
    assert d.route == "irsde" and "noisy" in d.labels and "hazy" in d.labels
    dmap_noisy_only = degradation_map(probe, x, labels=["noisy", "clean"])
    p = plan(dmap_noisy_only, Thresholds(degraded=0.3, region=0.5, feather=8))
    m = p.masks["irsde"][0]
    assert p.decisions[0].route == "irsde" and 0.3 < p.decisions[0].area < 0.7
    assert float(m[:, :100].min()) > 0.49 and float(m[:, 160:].max()) < 0.01  # noisy half restored, rest kept
    assert float((m[:, 1:] - m[:, :-1]).abs().max()) < 0.2  # feathered
    assert torch.allclose(p.masks["pass"][0], 1 - m)
    assert json.loads(p.report_json())[0]["route"] == "irsde" and "IRSDE" in p.report_text()


# ------------------------------------------------------------------------------------------------ fidelity
def _photo(h=64, w=80, seed=0) -> torch.Tensor:
    from conftest import make_test_image

    return torch.from_numpy(make_test_image(h, w, seed)).permute(2, 0, 1)[None].float() / 255


def test_fidelity_passes_identity_and_flags_shift_and_recolour():
    x = _photo()
    shifted = torch.roll(x, shifts=(0, 6), dims=(2, 3))
    recoloured = (x * torch.tensor([1.25, 0.9, 0.8]).view(1, 3, 1, 1)).clamp(0, 1)
    denoised = x  # identity
    results, heat = measure(x, torch.cat([denoised, shifted, recoloured]))
    ident, shift, recol = results
    assert ident.passed and ident.psnr >= 99 - 1e-6 and ident.ssim == pytest.approx(1.0)
    assert not shift.passed and any("ssim" in f or "psnr" in f for f in shift.failed)
    assert not recol.passed and any("color shift" in f for f in recol.failed)
    assert heat.shape == (3, 64, 80) and float(heat[0].max()) < 1e-3 and float(heat[1].mean()) > 0.05
    # a mild denoise of a noisy input still passes at the input's scale (compare_scale 2)
    g = torch.Generator().manual_seed(0)
    noisy = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    (ok,), _ = measure(noisy, x)
    assert ok.passed, ok.failed
    # an upscaled result is compared at the input's scale
    up = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic", align_corners=False).clamp(0, 1)
    (ok_up,), heat_up = measure(x, up)
    assert ok_up.passed and heat_up.shape == (1, 128, 160)
    # DA-CLIP clean probability falling is a failure
    (drop,), _ = measure(x, x, clean_before=torch.tensor([0.9]), clean_after=torch.tensor([0.2]))
    assert not drop.passed and "clean probability" in drop.failed[0]


def test_fidelity_picks_the_faithful_candidate_of_three():
    x = _photo(seed=3)
    g = torch.Generator().manual_seed(1)
    faithful = (x + 0.01 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    hallucinated = x.clone()
    hallucinated[..., 16:48, 20:60] = torch.rand(1, 3, 32, 40, generator=g)
    recoloured = x[:, [2, 1, 0]]
    for order in ([faithful, hallucinated, recoloured], [recoloured, faithful, hallucinated],
                  [hallucinated, recoloured, faithful]):
        results, _ = measure(x, torch.cat(order))
        assert most_faithful(results) == next(i for i, c in enumerate(order) if c is faithful)
    with pytest.raises(InputError, match="batch"):
        measure(torch.cat([x, x]), torch.cat([x, x, x]))
    with pytest.raises(InputError):
        FidelityThresholds(compare_scale=0)


# ------------------------------------------------------------------------------------------------ nodes (kit)
@pytest.fixture()
def kit(comfy_env):
    n = comfy_env.node_classes
    daclip = n["DACLIPLoader"].execute("daclip_ViT-B-32.pt", "auto").args[0]
    irsde = n["IRSDELoader"].execute("universal-ir.pth").args[0]
    return n, daclip, irsde


def test_map_and_route_nodes_on_the_random_weight_kit(kit):
    n, daclip, _ = kit
    img = torch.rand(2, 40, 56, 3, generator=torch.Generator().manual_seed(0))
    out = n["DACLIPDegradationMap"].execute(daclip, img, 0, 0.5, 4)
    dmap, pv, table, *masks = out.args
    assert len(masks) == len(MAP_LABELS) and all(m.shape == (2, 40, 56) for m in masks)
    assert torch.allclose(torch.stack(masks).sum(0), torch.ones(2, 40, 56), atol=1e-4)
    assert pv.shape[0] == 2 and pv.shape[2] == 56 and pv.shape[3] == 3
    assert "clean" in table and out.ui.as_dict()["text"][0] == table
    r = n["ARRoute"].execute(dmap, False).args
    assert all(m.shape == (2, 40, 56) for m in r[:3])
    assert torch.allclose(r[0] + r[1] + r[2], torch.ones(2, 40, 56), atol=1e-5)
    assert len(r[3].splitlines()) == 2 and len(json.loads(r[4])) == 2
    with pytest.raises(InputError, match="AR_DEGRADATION_MAP"):
        n["ARRoute"].execute("not a map", False)


def test_auto_restore_node_end_to_end_on_the_kit(kit, short_irsde):
    n, daclip, irsde = kit
    img = torch.rand(2, 24, 32, 3, generator=torch.Generator().manual_seed(1))
    # thresholds 0: every image is restored (IR-SDE) over its whole area
    out = n["ARAutoRestore"].execute(img, daclip, irsde, None, None, 5, 0, degraded=0.0, full_strength=0.0,
                                     region=0.0, whole_image=0.0, low_resolution=0)
    res, mask, report = out.args
    rep = json.loads(report)
    assert res.shape == img.shape and torch.isfinite(res).all()
    assert [e["route"] for e in rep] == ["irsde", "irsde"] and torch.allclose(mask, torch.ones_like(mask))
    assert {"psnr", "ssim", "color_shift", "clean_before", "clean_after", "passed"} <= set(rep[0]["fidelity"])
    assert not torch.equal(res, img)
    # image b uses seed + b: the second image alone with seed 6 gives the same result
    alone = n["ARAutoRestore"].execute(img[1:], daclip, irsde, None, None, 6, 0, degraded=0.0, full_strength=0.0,
                                       region=0.0, whole_image=0.0, low_resolution=0).args[0]
    assert torch.allclose(alone, res[1:], atol=1e-6)
    # threshold 1: nothing reaches it, the input passes through unchanged
    kept = n["ARAutoRestore"].execute(img, daclip, None, None, None, 0, 0, degraded=1.0, full_strength=1.0).args
    assert torch.allclose(kept[0], img, atol=1e-6) and [e["route"] for e in json.loads(kept[2])] == ["pass"] * 2
    # SeeSR: a low-resolution image routes to the SeeSR result, whose size becomes the output size
    sr = torch.rand(2, 48, 64, 3)
    up = n["ARAutoRestore"].execute(img, daclip, irsde, None, sr, 0, 0, low_resolution=64).args
    assert up[0].shape == (2, 48, 64, 3) and torch.allclose(up[0], sr, atol=1e-6)
    assert [e["route"] for e in json.loads(up[2])] == ["seesr"] * 2
    dmap = n["DACLIPDegradationMap"].execute(daclip, img).args[0]
    lazy = n["ARAutoRestore"].check_lazy_status
    # connected but not evaluated yet: None; not connected: absent (then never requested)
    assert lazy(img, daclip, degradation_map=dmap, seesr_image=None, low_resolution=64) == ["seesr_image"]
    assert lazy(img, daclip, degradation_map=dmap, seesr_image=None, low_resolution=0, degraded=1.0,
                full_strength=1.0) == []
    assert lazy(img, daclip, degradation_map=dmap, low_resolution=64) == []
    assert lazy(img, daclip, seesr_image=None) == ["seesr_image"]  # no map yet: SeeSR may be needed
    with pytest.raises(InputError, match="no IR-SDE model"):
        n["ARAutoRestore"].execute(img, daclip, None, None, None, 0, 0, degraded=0.0, full_strength=0.0,
                                   low_resolution=0)


def test_fidelity_node_picks_candidates_per_input(kit):
    n, daclip, _ = kit
    x = torch.cat([_photo(seed=1), _photo(seed=2)]).permute(0, 2, 3, 1)
    bad = x.flip(2)
    restored = torch.cat([bad, x])  # candidate 1 (both inputs), then candidate 2
    best, heat, passed, report = n["ARFidelity"].execute(x, restored, daclip).args
    rep = json.loads(report)
    assert torch.equal(best, x) and passed and rep["chosen"] == [1, 1] and rep["candidates_per_input"] == 2
    assert heat.shape == (4, 64, 80, 3) and rep["results"][0]["clean_before"] is not None
    with pytest.raises(InputError, match="multiple"):
        n["ARFidelity"].execute(x, restored[:3])


def test_pipeline_restores_only_the_degraded_region(short_irsde):
    """Probe map (left half noisy) + the kit's DA-CLIP and IR-SDE: the left half is restored, the right half is
    the input bit for bit, with a feathered seam between."""
    from aware_restore.core.auto.pipeline import auto_restore
    from aware_restore.core.daclip import load_daclip
    from aware_restore.core.irsde import load_irsde
    from conftest import FIXTURES

    x = left_noisy_right_hazy(32, 128)
    dmap = degradation_map(ProbeDaclip(image_size=32), x, labels=["noisy", "clean"])
    daclip = load_daclip(FIXTURES / "daclip" / "daclip_tiny.safetensors")
    irsde = load_irsde(FIXTURES / "irsde" / "irsde_unet_tiny.safetensors")
    res = auto_restore(daclip, irsde, x, Thresholds(degraded=0.3, region=0.5, feather=4), seed=3, dmap=dmap)
    assert res.plan.routes() == ["irsde"] and res.images.shape == x.shape
    diff = (res.images - x).abs().amax(dim=(0, 1))  # [H, W]
    assert float(diff[:, :48].mean()) > 0.01  # restored (2-step schedule: visibly changed)
    assert float(diff[:, 80:].max()) == 0.0  # kept exactly
    rep = res.report()[0]
    assert rep["route"] == "irsde" and 0.3 < rep["area"] < 0.7 and "fidelity" in rep


def test_pipeline_reports_progress_and_stops_while_mapping():
    """The map is the pipeline's first long loop: its windows drive the progress callback, so an interrupt raised
    there stops the run before the whole map is computed (it used to run without any progress call)."""
    from aware_restore.core.auto.pipeline import auto_restore

    class Stop(Exception):
        pass

    x = left_noisy_right_hazy(64, 256)
    probe = ProbeDaclip(image_size=32)
    seen = []

    def progress(done: int, total: int) -> None:
        seen.append((done, total))
        if len(seen) == 2:
            raise Stop

    with pytest.raises(Stop):
        auto_restore(probe, None, x, Thresholds(degraded=1.0, full=1.0), progress=progress)
    full = ProbeDaclip(image_size=32)
    degradation_map(full, x)
    assert probe.calls < full.calls, (probe.calls, full.calls)
    assert all(d <= t for d, t in seen) and seen[0][0] <= seen[1][0]


def test_feather_keeps_full_masks_full_on_images_thinner_than_the_radius():
    """Feathering smooths edges only: a mask that is 1 everywhere stays 1 when a side is shorter than the feather
    radius (the kernel cut to that side used to sum below 1 and fade the whole mask)."""
    from aware_restore.core.auto.route import feather

    for h, w in ((10, 40), (1, 64), (64, 3), (200, 300)):
        ones = torch.ones(2, h, w)
        out = feather(ones, 16 if h != 200 else 256)
        assert torch.allclose(out, ones, atol=1e-5), (h, w, float(out.min()))
    half = torch.zeros(1, 8, 64)
    half[..., :32] = 1
    out = feather(half, 16)[0, 4]
    assert float(out[0]) == pytest.approx(1.0, abs=1e-3) and float(out[-1]) < 1e-3 and 0.3 < float(out[31]) < 0.7


def test_map_select_takes_one_image_like_the_other_payloads():
    """``select(-1)`` is the last image (it gave an empty map), an index out of range raises (it gave an empty
    map too), as the embeddings payloads' ``select`` does."""
    x = torch.cat([left_noisy_right_hazy(32, 64, seed=s) for s in (0, 1)])
    dmap = degradation_map(ProbeDaclip(image_size=32), x)
    last = dmap.select(-1)
    assert len(last) == 1 and torch.equal(last.probs, dmap.probs[1:]) and torch.equal(last.global_probs,
                                                                                     dmap.global_probs[1:])
    assert len(dmap.select(0)) == 1 and len(dmap.select(slice(0, 2))) == 2
    with pytest.raises(IndexError):
        dmap.select(2)


@pytest.mark.parametrize(("h", "w", "side"), [(64, 130, 33), (64, 130, 32), (1365, 2048, 1024), (100, 300, 64)])
def test_map_on_a_reduced_plane_has_no_holes(h, w, side):
    """Large images are mapped on a plane of at most ``max_map_side`` px (ceil-sized): every plane pixel is
    covered by a window, so the map is finite and sums to 1 everywhere (the scaled end of the border windows was
    rounded down and left a NaN row/column, e.g. 2048x1365 at the default 1024)."""
    probe = ProbeDaclip(image_size=32 if side < 1024 else 224)
    dmap = degradation_map(probe, torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(0)),
                           max_map_side=side)
    assert max(dmap.probs.shape[-2:]) <= side + 1
    assert torch.isfinite(dmap.probs).all() and torch.isfinite(dmap.masks()).all()
    assert torch.allclose(dmap.probs.sum(dim=1), torch.ones(1, *dmap.probs.shape[-2:]), atol=1e-5)

