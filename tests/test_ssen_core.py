"""SSEN library: deformable-conv backends agree, checkpoints round-trip with inferred hyper-parameters,
tiling and reference pairing behave, bad input gives clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from aware_restore.core.errors import StrictLoadError

from aware_restore.core.checkpoint import read_metadata, save_safetensors
from aware_restore.core.registry import WrongModelError, detect_family
from aware_restore.core.ssen import SSENConfig, SSENet, infer_config, load_ssen, save_ssen
from aware_restore.core.ssen.deform import ModulatedDeformConv2d, deform_conv2d, resolve_backend
from aware_restore.core.ssen.infer import offset_map, pair_references, super_resolve


def _randomise(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


TINY = SSENConfig(nf=8, n_pre=1, n_post=1, est_nf=8, groups=2)


@pytest.mark.parametrize("groups,out_ch,shape", [(1, 5, (1, 4, 7, 9)), (2, 6, (2, 8, 10, 6))])
def test_deform_backends_equal_forward_and_grads(groups, out_ch, shape):
    g = torch.Generator().manual_seed(1)
    b, c, h, w = shape
    x = torch.randn(shape, generator=g, requires_grad=True)
    # large offsets so that many taps fall outside the image or between pixels
    off = (torch.randn(b, 2 * groups * 9, h, w, generator=g) * 3).requires_grad_()
    mask = torch.rand(b, groups * 9, h, w, generator=g, requires_grad=True)
    wt = torch.randn(out_ch, c, 3, 3, generator=g, requires_grad=True)
    bias = torch.randn(out_ch, generator=g, requires_grad=True)
    proj = torch.randn(b, out_ch, h, w, generator=g)
    res = {}
    for backend in ("torchvision", "grid_sample"):
        y = deform_conv2d(x, off, mask, wt, bias, padding=1, backend=backend)
        grads = torch.autograd.grad((y * proj).sum(), (x, off, mask, wt, bias))
        res[backend] = (y, grads)
    (ya, ga), (yb, gb) = res["torchvision"], res["grid_sample"]
    assert ya.shape == (b, out_ch, h, w)
    assert torch.allclose(ya, yb, atol=1e-5, rtol=0)
    for a, bb in zip(ga, gb):
        assert torch.allclose(a, bb, atol=1e-5, rtol=1e-5)


def test_deform_backend_selection_and_identity_init():
    assert resolve_backend("auto", torch.device("cpu")) == "grid_sample"
    assert resolve_backend("auto", torch.device("cuda")) == "torchvision"
    with pytest.raises(ValueError, match="backend"):
        resolve_backend("cudnn", torch.device("cpu"))
    dcn = ModulatedDeformConv2d(6)
    x = torch.randn(1, 6, 5, 5)
    y = dcn(x, torch.zeros(1, 18, 5, 5), torch.ones(1, 9, 5, 5))
    assert torch.allclose(y, x, atol=1e-6)  # identity-initialised
    shifted = torch.zeros(1, 18, 5, 5)
    shifted[:, 1::2] = 1.0  # every tap one pixel to the right
    y = dcn(x, shifted, torch.ones(1, 9, 5, 5))
    assert torch.allclose(y[..., :-1], x[..., 1:], atol=1e-6)


def test_state_dict_round_trip_and_config_inference(tmp_path):
    model = _randomise(SSENet(TINY))
    path = save_ssen(model, tmp_path / "m.safetensors")
    meta = read_metadata(path)
    assert json.loads(meta["config"]) == TINY.to_json()
    loaded = load_ssen(path)
    assert loaded.config == TINY
    assert detect_family(loaded.state_dict()) == "ssen"
    lr, ref = torch.rand(1, 3, 12, 10), torch.rand(1, 3, 30, 50)
    with torch.no_grad():
        assert torch.equal(model(lr, ref), loaded(lr, ref))
    # RCAN backbone, no non-local, other sizes: inferred back from the shapes alone
    cfg = SSENConfig(nf=12, n_pre=2, n_post=1, backbone="rcan", ca_reduction=4, ref_blocks=2, est_nf=6, groups=3,
                     nonlocal_blocks=False)
    assert infer_config(SSENet(cfg).state_dict()) == cfg
    bare = {k: v for k, v in SSENet(TINY).state_dict().items() if not k.startswith("ssen.")}
    assert infer_config(bare).use_ssen is False


def test_load_rejects_wrong_or_damaged_checkpoints(tmp_path):
    sd = SSENet(TINY).state_dict()
    other = tmp_path / "other.safetensors"
    save_safetensors({"conv_in.weight": torch.zeros(1), "down_blocks.0.x": torch.zeros(1)}, other)
    with pytest.raises(WrongModelError, match="SSEN"):
        load_ssen(other)
    damaged = dict(sd)
    damaged.pop("ssen.dcns.0.bias")
    with pytest.raises(StrictLoadError, match="1 missing.*ssen.dcns.0.bias"):
        load_ssen(damaged)


def test_model_shapes_references_and_self_similarity():
    model = _randomise(SSENet(TINY))
    lr = torch.rand(2, 3, 9, 13)
    with torch.no_grad():
        sr = model(lr)
        assert sr.shape == (2, 3, 36, 52)
        # self-similarity = the bicubic ×4 upsampling of the input used as the reference
        up = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
        assert torch.allclose(sr, model(lr, up), atol=1e-5)
        # any reference size is resized to 4h×4w; one reference serves the whole batch
        one = torch.rand(1, 3, 70, 20)
        both = model(lr, one)
        assert torch.allclose(both[1:], model(lr[1:], one), atol=1e-5)
    with pytest.raises(ValueError, match="one per image"):
        pair_references(lr, torch.rand(3, 3, 8, 8))


def test_consistency_gate_passes_matching_and_blocks_unrelated_references():
    g = torch.Generator().manual_seed(4)
    hr = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(48, 48), mode="bilinear")
    lr = torch.nn.functional.avg_pool2d(hr, 4)
    base = torch.nn.functional.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    assert float(SSENet.consistency_gate(lr, hr).min()) > 0.99       # the HR of the input itself
    unrelated = 1 - hr
    assert float(SSENet.consistency_gate(lr, unrelated).mean()) < 0.05
    model = _randomise(SSENet(TINY))
    with torch.no_grad():
        assert torch.allclose(model.gated_reference(lr, hr, base), hr, atol=0.02)
        assert torch.allclose(model(lr, unrelated), model(lr), atol=0.02)    # gated to self-similarity
        assert not torch.allclose(model(lr, hr), model(lr), atol=0.02)      # a matching reference is used


def test_super_resolve_tiling_batches_and_errors():
    model = _randomise(SSENet(TINY))
    lr, ref = torch.rand(2, 3, 20, 24), torch.rand(2, 3, 50, 50)
    calls = []
    whole = super_resolve(model, lr, ref)
    one_tile = super_resolve(model, lr, ref, tile=32, progress=lambda d, t: calls.append((d, t)))
    assert torch.equal(whole, one_tile)  # fits in one tile → exactly the untiled result
    assert calls[-1] == (2, 2)
    with torch.no_grad():
        assert torch.allclose(whole[1:], model(lr[1:], ref[1:]).clamp(0, 1), atol=1e-6)  # per-image pairing
    tiled = super_resolve(model, lr, ref, tile=12, overlap=6)
    assert tiled.shape == whole.shape and torch.isfinite(tiled).all()
    with pytest.raises(ValueError, match="RGB"):
        super_resolve(model, torch.rand(1, 4, 16, 16))
    with pytest.raises(ValueError, match="at least"):
        super_resolve(model, torch.rand(1, 3, 2, 16))
    points, heat = offset_map(model, lr[:1], ref[:1], step=4)
    assert points.shape == heat.shape == (1, 3, 80, 96)
    assert 0 <= float(points.min()) and float(points.max()) <= 1
