"""SSEN library: deformable-conv backends agree, checkpoints round-trip with inferred hyper-parameters, the
coarse match finds shifts, the similarity gate falls back to self-similarity, displacements compose, tiling and
reference pairing behave, bad input gives clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from aware_restore.core.checkpoint import read_metadata, save_safetensors
from aware_restore.core.errors import StrictLoadError
from aware_restore.core.registry import WrongModelError, detect_family
from aware_restore.core.ssen import SSENConfig, SSENet, infer_config, load_ssen, save_ssen
from aware_restore.core.ssen.deform import ModulatedDeformConv2d, deform_conv2d, resolve_backend
from aware_restore.core.ssen.infer import displacement, offset_map, pair_references, super_resolve
from aware_restore.core.ssen.match import coarse_flow, warp
from aware_restore.core.ssen.model import compose_displacement, similarity_gate


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
    assert torch.allclose(ya, yb, atol=1e-5, rtol=1e-5)
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
    paper = SSENConfig.paper()
    assert (paper.nf, paper.n_pre + paper.n_post) == (64, 16)
    sd = SSENet(paper).state_dict()
    assert infer_config(sd) == paper
    assert sum(v.numel() for v in sd.values()) * 4 <= 20e6  # fp32 file well under 20 MB
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


def _texture(seed: int = 2, size: int = 96) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(1, 3, size // 4, size // 4, generator=g), size=(size, size),
                                           mode="bicubic", align_corners=False).clamp(0, 1)


def test_coarse_match_finds_whole_and_sub_pixel_shifts():
    big = _texture()
    a = big[..., 24:64, 24:64]
    b = big[..., 21:61, 29:69]  # a's pixel p lies at p + (3, -5) in b
    flow, score = coarse_flow(a, b)
    err = (flow[..., 6:-6, 6:-6] - torch.tensor([3.0, -5.0]).view(1, 2, 1, 1)).abs()
    assert (err < 0.5).float().mean() > 0.95       # the whole-pixel search
    assert float(err.median()) < 0.1               # the parabolic sub-pixel step keeps it there
    assert float(score[..., 6:-6, 6:-6].median()) > 0.95
    half = warp(big, torch.tensor([1.5, 0.0]).view(1, 2, 1, 1).expand(1, 2, 96, 96), mode="bicubic")
    flow, _ = coarse_flow(big[..., 24:64, 24:64], half[..., 24:64, 24:64])  # content 1.5 px further down
    assert abs(float(flow[0, 0, 6:-6, 6:-6].median()) + 1.5) < 0.25
    assert abs(float(flow[0, 1, 6:-6, 6:-6].median())) < 0.1


def test_reference_windows_need_the_whole_image_match():
    model = load_ssen()
    lr = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    window = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="whole image's match"):
        model(lr, window, ref_origin=(2, 2))
    with pytest.raises(ValueError, match="multiples of 4"):
        model(lr, window[..., :63, :], ref_origin=(2, 2))
    with pytest.raises(ValueError, match="does not lie inside"):
        m = model.ssen.match(lr, torch.rand(1, 3, 48, 48))
        model(lr, window, ref_origin=(6, 0), match=(m.flow, m.gate))
    with pytest.raises(ValueError, match="differ in size"):
        coarse_flow(lr, window)
    # a window at origin (0, 0) with the image's own match is the plain call
    ref = torch.rand(1, 3, 48, 48)
    m = model.ssen.match(lr, ref)
    with torch.no_grad():
        assert torch.equal(model(lr, ref), model(lr, m.ref, ref_origin=(0, 0), match=(m.flow, m.gate)))


def test_similarity_gate_and_fallback_to_self_similarity():
    hr = _texture(size=128)
    lr = torch.nn.functional.interpolate(hr, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    zero = torch.zeros(1, 2, 32, 32)
    assert float(similarity_gate(lr, lr, zero).mean()) > 0.95          # its own content, coherent match
    assert float(similarity_gate(lr, torch.full_like(lr, 0.5), zero).max()) == 0.0  # flat: no evidence
    scattered = torch.randn(1, 2, 32, 32, generator=torch.Generator().manual_seed(0)) * 4
    assert float(similarity_gate(lr, lr, scattered).max()) == 0.0     # an incoherent match is not trusted
    model = _randomise(SSENet(TINY))
    with torch.no_grad():
        # where the gate is shut every reference input falls back to the self-similarity reference: two
        # references the gate shuts everywhere give the same result (a flat one, one of pure noise)
        noise = torch.rand(hr.shape, generator=torch.Generator().manual_seed(5))
        shut, trace = model(lr, torch.full_like(hr, 0.5), return_offsets=True)
        assert float(trace["gate"].max()) == 0.0
        _, trace_noise = model(lr, noise, return_offsets=True)
        if float(trace_noise["gate"].max()) == 0.0:
            assert torch.allclose(model(lr, noise), shut, atol=1e-6)
        assert torch.allclose(model(lr, torch.full_like(hr, 0.2)), shut, atol=1e-6)
        assert not torch.allclose(model(lr, hr), shut, atol=1e-3)  # a matching reference is used


def test_displacements_compose_through_the_stacked_layers():
    def layer(dy: float, dx: float, groups: int = 2) -> torch.Tensor:
        off = torch.zeros(1, groups, 9, 2, 6, 7)
        off[:, :, :, 0], off[:, :, :, 1] = dy, dx
        return off.view(1, -1, 6, 7)

    d = compose_displacement([layer(-1, 1), layer(0, 2), layer(1, 0)])
    assert torch.allclose(d, torch.tensor([0.0, 3.0]).view(1, 2, 1, 1).expand(1, 2, 6, 7))
    ramp = layer(0, 0)
    ramp.view(1, 2, 9, 2, 6, 7)[:, :, :, 1] = torch.arange(7.0)  # the first layer's dx grows with x
    d = compose_displacement([ramp, layer(0, 0), layer(0, 2)])
    assert torch.allclose(d[0, 1, :, :5], 2 + torch.arange(2.0, 7.0).expand(6, 5))  # read where the last looks


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
    disp, weight = displacement(model, lr, ref)
    assert disp.shape == (2, 2, 20, 24) and weight.shape == (2, 1, 20, 24)
    assert 0 <= float(weight.min()) and float(weight.max()) <= 1
