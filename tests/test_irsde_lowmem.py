"""Exact low-memory IR-SDE evaluation (core/irsde/lowmem.py): the same eps as the whole-image forward, whatever
the tile, for the fixture networks (universal, wild), random tiny configurations, odd sizes and batches; and a
restore through ``LowMemNetwork`` that matches the whole-image restore."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from aware_restore.core.irsde import IRSDE, restore
from aware_restore.core.irsde.lowmem import LowMemNetwork, forward_lowmem, passes
from aware_restore.core.irsde.unet import ConditionalUNet, UNetConfig, infer_config
from safetensors.torch import load_file

FIX = Path(__file__).parent / "fixtures" / "irsde"
MEAN_TOL, MAX_TOL = 1e-4, 1e-3  # float32, per evaluation (observed: mean ~2e-6, max ~2e-5 with |eps| up to ~6)


def _fixture_net(name: str) -> ConditionalUNet:
    # clone: tensors handed out by safetensors may be unaligned, which moves MKL GEMM rounding
    sd = {k: v.float().clone() for k, v in load_file(str(FIX / name)).items()}
    net = ConditionalUNet(infer_config(sd))
    net.load_state_dict(sd, strict=True)
    return net.eval().requires_grad_(False)


def _random_net(config: UNetConfig, seed: int) -> ConditionalUNet:
    torch.manual_seed(seed)
    net = ConditionalUNet(config).eval().requires_grad_(False)
    with torch.no_grad():  # the default init leaves some paths near zero; make every part matter
        for name, p in net.named_parameters():
            if name.endswith("prompt") or "proj_out" in name or p.ndim == 1:
                p.normal_(0, 0.3 if p.ndim == 1 else 1.0)
    return net


@pytest.fixture(scope="module")
def universal():
    return _fixture_net("irsde_unet_tiny.safetensors")


@pytest.fixture(scope="module")
def wild():
    return _fixture_net("wild_unet_tiny.safetensors")


def _inputs(h: int, w: int, dim: int = 32, batch: int = 1, seed: int = 0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    xt = torch.rand(batch, 3, h, w, generator=g, dtype=dtype)
    mu = torch.rand(batch, 3, h, w, generator=g, dtype=dtype)
    return xt, mu, torch.randn(batch, dim, generator=g, dtype=dtype), torch.randn(batch, dim, generator=g, dtype=dtype)


def _compare(net, h, w, tiles, t=37, batch=1, dim=32, contexts=True):
    xt, mu, text, image = _inputs(h, w, dim, batch)
    if not contexts:
        text = image = None
    with torch.no_grad():
        ref = net(xt, mu, t, text_context=text, image_context=image)
    for tile in tiles:
        out = forward_lowmem(net, xt, mu, t, text, image, tile=tile)
        assert out.shape == ref.shape and out.dtype == ref.dtype
        err = (out - ref).abs()
        assert float(err.mean()) <= MEAN_TOL and float(err.max()) <= MAX_TOL, (tile, float(err.mean()),
                                                                              float(err.max()))


# ------------------------------------------------------------------------------------------ one evaluation
@pytest.mark.parametrize("net_name,h,w,tiles", [
    ("universal", 96, 80, (16, 37, 64)), ("wild", 96, 80, (21, 40, 500)),
    ("universal", 37, 53, (13,)), ("wild", 37, 53, (29,)),
    ("universal", 256, 256, (100,)), ("wild", 256, 256, (72,)),
])
def test_lowmem_equals_whole_image_forward(net_name, h, w, tiles, request):
    _compare(request.getfixturevalue(net_name), h, w, tiles)


def test_lowmem_batch_with_per_image_contexts(universal):
    _compare(universal, 45, 33, (17,), batch=2, t=torch.tensor([12.0, 80.0]))


@pytest.mark.parametrize("config", [
    UNetConfig(nf=32, ch_mult=(1, 2), context_dim=16, use_degra_context=False, use_image_context=False),
    UNetConfig(nf=32, ch_mult=(1, 1, 2), context_dim=16, use_degra_context=True, use_image_context=True),
    UNetConfig(nf=32, ch_mult=(1, 2, 1), context_dim=24, use_degra_context=False, use_image_context=True, scale=0.5),
    UNetConfig(nf=32, ch_mult=(1,), context_dim=16),
], ids=["linear-attention-only", "three-levels", "wild-three-levels", "one-level"])
def test_lowmem_random_tiny_configs(config):
    net = _random_net(config, seed=len(config.ch_mult))
    _compare(net, 50, 42, (11, 24), dim=config.context_dim)


def test_lowmem_without_contexts():
    # no image token: the transformers' cross-attention becomes self-attention (global), handled whole; that
    # needs every transformer as wide as the context (32 here)
    net = _random_net(UNetConfig(nf=32, ch_mult=(1, 1), context_dim=32), seed=7)
    _compare(net, 40, 36, (16,), contexts=False)


@pytest.mark.parametrize("h,w", [(1, 1), (3, 2), (17, 5)])
def test_lowmem_tiny_images_pad_like_the_forward(universal, h, w):
    _compare(universal, h, w, (1, 8))


@pytest.mark.parametrize("net_name", ["universal", "wild"])
def test_lowmem_is_exact_in_float64(net_name, request):
    """In float64 the remaining difference is rounding only (~1e-14): the evaluation order, not the algorithm."""
    net = _fixture_net("irsde_unet_tiny.safetensors" if net_name == "universal" else "wild_unet_tiny.safetensors")
    net = net.double()

    class ToDouble(torch.nn.Module):
        def forward(self, x):
            return x.double()

    # the network's sinusoidal time features are float32: cast them for this float64 comparison
    net.time_mlp = torch.nn.Sequential(net.time_mlp[0], ToDouble(), *net.time_mlp[1:])
    xt, mu, text, image = _inputs(37, 53, dtype=torch.float64)
    with torch.no_grad():
        ref = net(xt, mu, 37, text_context=text, image_context=image)
    for tile in (16, 23):
        out = forward_lowmem(net, xt, mu, 37, text, image, tile=tile)
        assert float((out - ref).abs().max()) < 1e-11


def test_lowmem_progress_and_arguments(universal):
    xt, mu, text, image = _inputs(40, 40)
    calls = []
    forward_lowmem(universal, xt, mu, 5, text, image, tile=16, progress=lambda d, n: calls.append((d, n)))
    n = passes(universal)
    assert calls == [(k, n) for k in range(1, n + 1)]
    for bad in (0, -3, None):
        with pytest.raises(ValueError, match="tile"):
            forward_lowmem(universal, xt, mu, 5, text, image, tile=bad)


# ------------------------------------------------------------------------------------------ restore
@dataclass
class Embeds:
    clean: torch.Tensor
    degradation: torch.Tensor


def test_lowmem_network_is_a_drop_in(universal):
    wrapped = LowMemNetwork(universal, tile=24)
    assert wrapped.config == universal.config and wrapped.variant == universal.variant
    assert [p.data_ptr() for p in wrapped.parameters()] == [p.data_ptr() for p in universal.parameters()]


@pytest.mark.parametrize("net_name,sampler", [("universal", "posterior"), ("wild", "sde")])
def test_restore_through_lowmem_matches_whole_image_restore(net_name, sampler, request):
    net = request.getfixturevalue(net_name)
    sde = IRSDE(T=4)
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 36, 60, generator=g)
    emb = Embeds(torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g))
    whole = restore(net, emb, img, steps=sde.T, sde=sde, sampler=sampler, seed=11)
    low = restore(LowMemNetwork(net, tile=24), emb, img, steps=sde.T, sde=sde, sampler=sampler, seed=11)
    tiled = restore(net, emb, img, steps=sde.T, sde=sde, sampler=sampler, seed=11, tile=32, tile_overlap=8,
                    tile_mode="tiles")
    exact = restore(net, emb, img, steps=sde.T, sde=sde, sampler=sampler, seed=11, tile=24)  # the default mode
    err = float((low - whole).abs().mean())
    assert err <= 1e-3 and float((exact - whole).abs().mean()) <= 1e-3
    # per-tile evaluation of the whole network is not exact; the low-memory one is, by orders of magnitude
    assert err * 100 < float((tiled - whole).abs().mean())


@pytest.mark.parametrize("tile", [None, 64])
def test_exact_mode_out_of_memory_falls_back_to_the_exact_low_memory_evaluation(universal, tile, monkeypatch):
    """A whole-image evaluation that runs out of memory (tile unset, or the image fits in the tile) continues with
    forward_lowmem on halved tiles — the same result — never with the approximate per-tile network."""
    restore_mod = importlib.import_module("aware_restore.core.irsde.restore")  # the package exports restore()

    sde = IRSDE(T=4)
    g = torch.Generator().manual_seed(3)
    img = torch.rand(1, 3, 36, 60, generator=g)
    emb = Embeds(torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g))
    run = dict(steps=sde.T, sde=sde, seed=11, sampler="sde")
    whole = restore(universal, emb, img, **run)
    low = restore(LowMemNetwork(universal, tile=16), emb, img, **run)

    whole_calls, tiles = [], []

    def no_memory(*args, **kwargs):  # the whole-image forward; forward_lowmem runs the submodules itself
        whole_calls.append(args[0].shape)
        raise torch.OutOfMemoryError("CUDA out of memory (injected)")

    real_lowmem = restore_mod.forward_lowmem

    def lowmem(*args, tile, **kwargs):
        tiles.append(tile)
        if tile > 20:  # the first halved tile runs out of memory as well: halve again
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_lowmem(*args, tile=tile, **kwargs)

    def approximate(*args, **kwargs):
        raise AssertionError("exact mode fell back to the per-tile network")

    monkeypatch.setattr(universal, "forward", no_memory)
    monkeypatch.setattr(restore_mod, "forward_lowmem", lowmem)
    monkeypatch.setattr(restore_mod, "tiled_apply", approximate)
    out = restore(universal, emb, img, tile=tile, **run)
    assert whole_calls == [(1, 3, 36, 60)]  # tried once; the tile that fitted is kept for the later steps
    assert tiles == [30, 16, 16, 16, 16]  # 60 → 30 (out of memory) → 16 (the minimum), then kept
    assert torch.equal(out, low)  # exactly the low-memory evaluation
    # = the whole-image restore up to float32 summation order (observed max 5.5e-5, mean 1.6e-7; the per-tile
    # network of "tiles" mode: max 1.0, mean 0.1)
    assert float((out - whole).abs().max()) <= 1e-4 and float((out - whole).abs().mean()) <= 1e-6
