"""IR-SDE (DA-CLIP universal restoration): parity with the official network and sampler, loading, restore()."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from aware_restore.core.checkpoint import meta_state_dict_from_key_list
from aware_restore.core.errors import ModelLoadError
from aware_restore.core.irsde import (
    IRSDE,
    ContextMismatchError,
    UNetConfig,
    build_irsde,
    infer_config,
    load_irsde,
    restore,
)
from aware_restore.core.registry import WrongModelError
from safetensors.torch import load_file

FIX = Path(__file__).parent / "fixtures" / "irsde"


def _load(name: str) -> dict[str, torch.Tensor]:
    # clone: tensors handed out by safetensors may be unaligned, which moves MKL GEMM rounding (see README)
    return {k: v.clone() for k, v in load_file(str(FIX / name)).items()}


@pytest.fixture(scope="module")
def universal():
    return load_irsde(FIX / "irsde_unet_tiny.safetensors")


@pytest.fixture(scope="module")
def wild():
    return load_irsde(FIX / "wild_unet_tiny.safetensors")


@pytest.fixture(scope="module")
def sde_fix():
    return _load("sde.safetensors")


@dataclass
class Embeds:
    clean: torch.Tensor
    degradation: torch.Tensor


def _embeds(batch: int = 1, dim: int = 32, seed: int = 5) -> Embeds:
    g = torch.Generator().manual_seed(seed)
    return Embeds(torch.randn(batch, dim, generator=g), torch.randn(batch, dim, generator=g))


# ------------------------------------------------------------------------------------------ network parity
@pytest.mark.parametrize("net_name,io_name", [("universal", "irsde_io"), ("wild", "wild_io")])
def test_unet_parity_odd_size(net_name, io_name, request):
    net = request.getfixturevalue(net_name)
    io = _load(f"{io_name}.safetensors")
    assert io["xt"].shape[-2:] == (21, 30)
    with torch.no_grad():
        out = net(io["xt"], io["mu"], int(io["t"]), text_context=io["text_context"],
                  image_context=io["image_context"])
        out_tensor_t = net(io["xt"], io["mu"], io["t"].float(), io["text_context"], io["image_context"])
    assert out.shape == io["out"].shape
    # fixture README: network outputs atol 1e-4; rtol 1e-5 for CPU-dependent float32 kernels
    torch.testing.assert_close(out, io["out"], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(out_tensor_t, io["out"], atol=1e-4, rtol=1e-5)


def test_wild_ignores_degradation_and_universal_uses_it(universal, wild):
    io = _load("irsde_io.safetensors")
    with torch.no_grad():
        w1 = wild(io["xt"], io["mu"], 37, io["text_context"], io["image_context"])
        w2 = wild(io["xt"], io["mu"], 37, io["text_context"] * 0.5, io["image_context"])
        u1 = universal(io["xt"], io["mu"], 37, io["text_context"], io["image_context"])
        u2 = universal(io["xt"], io["mu"], 37, io["text_context"] * 0.5, io["image_context"])
    assert torch.equal(w1, w2)
    assert (u1 - u2).abs().max() > 0.05


def test_inferred_config_matches_fixture_meta(universal, wild):
    meta = json.loads((FIX / "irsde_meta.json").read_text())
    for net, key in ((universal, "unet_setting"), (wild, "wild_setting")):
        s = meta[key]
        c = net.config
        assert (c.nf, list(c.ch_mult), c.context_dim) == (s["nf"], s["ch_mult"], s["context_dim"])
        assert (c.use_degra_context, c.use_image_context) == (s["use_degra_context"], s["use_image_context"])
        assert c.scale == s.get("scale", 1)
        assert sum(p.numel() for p in net.parameters()) == meta["n_params"]["unet" if key == "unet_setting" else "wild"]
    assert universal.variant == "universal" and wild.variant == "wild"


@pytest.mark.parametrize("name,ctx,variant", [("universal-ir", 512, "universal"), ("wild-ir", 768, "wild")])
def test_real_key_lists_load_strict_on_meta(name, ctx, variant):
    listing = FIX / f"irsde_keys_{name}.txt"
    sd = meta_state_dict_from_key_list(listing)
    config = infer_config(sd)
    assert (config.nf, config.ch_mult, config.context_dim, config.variant) == (64, (1, 2, 4, 8), ctx, variant)
    net = build_irsde(config, "meta")
    own = net.state_dict()
    assert list(own) == list(sd)  # same names, same order
    assert {k: tuple(v.shape) for k, v in own.items()} == {k: tuple(v.shape) for k, v in sd.items()}
    loaded = load_irsde(sd)
    assert loaded.config == config


def test_wrong_file_names_irsde(tmp_path):
    foreign = {"clip.visual.proj": torch.zeros(2, 2), "visual_control.conv1.weight": torch.zeros(1)}
    with pytest.raises(WrongModelError, match="IR-SDE"):
        load_irsde(foreign)
    path = tmp_path / "sd15.safetensors"
    from safetensors.torch import save_file
    save_file({"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(2)}, str(path))
    with pytest.raises(WrongModelError, match=r"IR-SDE.*models/irsde"):
        load_irsde(path)


def test_incomplete_irsde_file_is_a_clear_error():
    sd = _load("irsde_unet_tiny.safetensors")
    del sd["mid_block1.block1.proj.weight"]
    with pytest.raises(ModelLoadError, match="mid_block1.block1.proj.weight"):
        load_irsde(sd)


# ------------------------------------------------------------------------------------------ SDE parity
def test_schedule_arrays(sde_fix):
    sde = IRSDE(max_sigma=50, T=100, eps=0.005, schedule="cosine")
    assert sde.max_sigma == pytest.approx(50 / 255)
    for key, atol in (("thetas", 1e-6), ("sigmas", 1e-6), ("sigma_bars", 1e-6), ("thetas_cumsum", 1e-5)):
        arr = getattr(sde, key)
        assert arr.shape == (101,)
        torch.testing.assert_close(arr, sde_fix[key], atol=atol, rtol=1e-6)
    assert sde.dt == pytest.approx(float(sde_fix["dt"]), abs=1e-7)
    assert float(torch.exp(-sde.thetas_cumsum[-1] * sde.dt)) == pytest.approx(0.005, rel=1e-5)
    stds = torch.stack([sde.posterior_std(int(t)) for t in sde_fix["posterior_t"]])
    torch.testing.assert_close(stds, sde_fix["posterior_std"], atol=1e-6, rtol=1e-6)


def test_start_state(sde_fix):
    sde = IRSDE()
    torch.testing.assert_close(sde.start_state(sde_fix["mu"], sde_fix["noise_T"]), sde_fix["x_T"], atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("sampler", ["posterior", "sde"])
def test_single_steps_with_stored_eps(sde_fix, sampler):
    sde, mu = IRSDE(), sde_fix["mu"]
    xs, eps, zs = sde_fix[f"{sampler}_x"], sde_fix[f"{sampler}_eps"], sde_fix[f"{sampler}_noise"]
    for k, t in enumerate(sde_fix[f"{sampler}_t"].tolist()):
        nxt = sde.step(sampler, xs[k], eps[k], t, mu, zs[k])
        torch.testing.assert_close(nxt, xs[k + 1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("sampler", ["posterior", "sde"])
def test_trajectory_with_injected_noise(universal, sde_fix, sampler):
    sde, mu = IRSDE(), sde_fix["mu"]
    x = sde.start_state(mu, sde_fix["noise_T"])
    for k, t in enumerate(sde_fix[f"{sampler}_t"].tolist()):
        with torch.no_grad():
            eps = universal(x, mu, t, text_context=sde_fix["text_context"], image_context=sde_fix["image_context"])
        torch.testing.assert_close(eps, sde_fix[f"{sampler}_eps"][k], atol=1e-4, rtol=1e-5)
        x = sde.step(sampler, x, eps, t, mu, sde_fix[f"{sampler}_noise"][k])
        torch.testing.assert_close(x, sde_fix[f"{sampler}_x"][k + 1], atol=1e-4, rtol=1e-5)


# ------------------------------------------------------------------------------------------ restore()
FAST = IRSDE(T=8)  # restore() logic tests: a short schedule keeps them fast (the 100-step default is tested above)


def _fast(net, daclip, images, **kw):
    return restore(net, daclip, images, steps=FAST.T, sde=FAST, **kw)


def _image(b: int = 1, h: int = 20, w: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed))


def test_restore_seeded_and_batch_safe(universal):
    imgs, emb = _image(2), _embeds(2)
    calls = []
    out = _fast(universal, emb, imgs, seed=7, progress=lambda d, t: calls.append((d, t)))
    assert out.shape == imgs.shape and out.dtype == torch.float32
    assert 0.0 <= float(out.min()) and float(out.max()) <= 1.0
    assert calls == [(k, 16) for k in range(1, 17)]
    again = _fast(universal, emb, imgs, seed=7)
    assert torch.equal(out, again)
    # image b of a batch equals a single-image run with seed + b
    single = _fast(universal, Embeds(emb.clean[1:], emb.degradation[1:]), imgs[1:], seed=8)
    assert torch.equal(out[1:], single)
    other = _fast(universal, Embeds(emb.clean[:1], emb.degradation[:1]), imgs[:1], seed=8)
    assert (other - out[:1]).abs().max() > 1e-3


def test_restore_tiled_fitting_image_equals_untiled(wild):
    img, emb = _image(h=24, w=30), _embeds()
    untiled = _fast(wild, emb, img, sampler="sde", seed=3)
    tiled = _fast(wild, emb, img, sampler="sde", seed=3, tile=32, tile_overlap=8)
    assert torch.equal(untiled, tiled)


def test_restore_tiled_large_image(wild):
    img, emb = _image(h=40, w=70), _embeds()
    steps = []
    out = _fast(wild, emb, img, seed=3, tile=32, tile_overlap=8, progress=lambda d, t: steps.append(d))
    assert out.shape == img.shape and torch.isfinite(out).all()
    assert steps == list(range(1, 9))
    assert torch.equal(out, _fast(wild, emb, img, seed=3, tile=32, tile_overlap=8))


def test_restore_alpha_passes_through(wild):
    rgba = torch.cat([_image(), torch.full((1, 1, 20, 24), 0.25)], dim=1)
    out = _fast(wild, _embeds(), rgba, seed=1)
    assert out.shape == (1, 4, 20, 24)
    assert torch.equal(out[:, 3:], rgba[:, 3:])
    assert torch.equal(out[:, :3], _fast(wild, _embeds(), rgba[:, :3], seed=1))


def test_context_width_mismatch_names_the_pairs(universal):
    with pytest.raises(ContextMismatchError, match=r"universal-ir.*daclip_ViT-B-32.*wild-ir.*wild-daclip_ViT-L-14"):
        restore(universal, _embeds(dim=16), _image())


def test_restore_rejects_bad_arguments(universal):
    assert IRSDE().timesteps() == list(range(100, 0, -1))
    with pytest.raises(ValueError, match="100 steps"):
        restore(universal, _embeds(), _image(), steps=50)
    with pytest.raises(ValueError, match="sampler"):
        restore(universal, _embeds(), _image(), sampler="euler")
    with pytest.raises(ValueError, match="embeddings"):
        restore(universal, None, _image())
    with pytest.raises(ValueError, match="one per image"):
        restore(universal, _embeds(3), _image(2))


class _Oracle(torch.nn.Module):
    """A perfect noise predictor for a known clean image: eps = (x - mu_bar(x0, t)) / sigma_bar(t)."""

    def __init__(self, sde: IRSDE, x0: torch.Tensor) -> None:
        super().__init__()
        self.sde, self.x0 = sde, x0
        self.config = UNetConfig(nf=32, ch_mult=(1,), context_dim=32)
        self.variant = "universal"
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def forward(self, xt, mu, t, text_context=None, image_context=None):
        return (xt - self.sde.mu_bar(self.x0, mu, t)) / self.sde.sigma_bars[t]


@pytest.mark.parametrize("sampler,tol", [("posterior", 1e-4), ("sde", 0.01)])
def test_full_100_step_sampler_recovers_clean_image_with_a_perfect_network(sampler, tol):
    sde = IRSDE()
    gt = _image(h=16, w=20, seed=4)
    lq = (gt * 0.5 + 0.25 * torch.rand(gt.shape, generator=torch.Generator().manual_seed(9))).clamp(0, 1)
    out = restore(_Oracle(sde, gt), _embeds(), lq, sampler=sampler, seed=2)
    assert (lq - gt).abs().mean() > 0.1
    assert (out - gt).abs().mean() < tol


@pytest.mark.parametrize("h,w,c", [(1, 1, 3), (3, 2, 1), (17, 5, 3)])
def test_tiny_and_gray_images_restore(wild, h, w, c):
    img = torch.rand(1, c, h, w, generator=torch.Generator().manual_seed(h * w))
    out = _fast(wild, _embeds(), img, seed=0)
    assert out.shape == (1, 3, h, w) and torch.isfinite(out).all()
