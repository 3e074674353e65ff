"""bf16 end to end for every family, against float32 on the same weights (CPU; tolerances measured on the tiny
test models, see the comments — bf16 keeps 8 significand bits, ≈ 0.4 % per rounding).

fp16 needs a GPU for most of these kernels; ``benchmarks/gpu_suite.py`` runs every family in fp16 and bf16 there.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from aware_restore.core import registry

FIX = Path(__file__).resolve().parent / "fixtures"
BF16 = torch.bfloat16


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())


@pytest.fixture(scope="module")
def image():
    return torch.rand(2, 3, 40, 48, generator=torch.Generator().manual_seed(0))


def _pair(path: Path, arch: str):
    return registry.load(path, arch).model, registry.load(path, arch, dtype=BF16).model


def test_daclip_bf16(image):
    from aware_restore.core.daclip import classify, encode_images

    m32, m16 = _pair(FIX / "daclip" / "daclip_tiny.safetensors", "daclip")
    assert m16.weight_dtype == BF16
    e32, e16 = encode_images(m32, image), encode_images(m16, image)
    # measured: clean 0.85 %, degradation 1.1 %, probabilities 0.01
    assert _rel(e16.clean, e32.clean) < 0.03 and _rel(e16.degradation, e32.degradation) < 0.03
    assert float((classify(m16, image) - classify(m32, image)).abs().max()) < 0.03


def test_irsde_bf16(image):
    from aware_restore.core.daclip import DaclipEmbeds
    from aware_restore.core.irsde import restore

    for name in ("irsde_unet_tiny", "wild_unet_tiny"):
        n32, n16 = _pair(FIX / "irsde" / f"{name}.safetensors", "irsde")
        g = torch.Generator().manual_seed(1)
        x, mu = torch.rand(1, 3, 32, 40, generator=g), torch.rand(1, 3, 32, 40, generator=g)
        c, d = torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g)
        with torch.no_grad():
            a = n32(x, mu, 50, text_context=d, image_context=c)
            b = n16(x.to(BF16), mu.to(BF16), 50, text_context=d.to(BF16), image_context=c.to(BF16))
        assert b.dtype == BF16
        # measured 1.2 % per evaluation (the official half-precision LayerNorm eps of 1e-3 would give 15 %)
        assert _rel(b, a) < 0.03, name
    # the whole reverse process: the SDE state stays float32, the network runs in bf16
    emb = DaclipEmbeds(torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g))
    n32, n16 = _pair(FIX / "irsde" / "irsde_unet_tiny.safetensors", "irsde")
    small = image[:1, :, :16, :16]
    r32, r16 = restore(n32, emb, small, seed=0), restore(n16, emb, small, seed=0)
    assert r16.dtype == torch.float32 and torch.isfinite(r16).all()
    assert float((r32 - r16).abs().mean()) * 255 < 2.0  # measured 0.82 8-bit levels


def test_ram_bf16(image):
    from aware_restore.core.ram import load_tagger, tag_images

    t32 = load_tagger(FIX / "ram" / "ram_tiny.pth", FIX / "ram" / "dape_tiny.pth")
    t16 = load_tagger(FIX / "ram" / "ram_tiny.pth", FIX / "ram" / "dape_tiny.pth", dtype=BF16)
    p32, e32 = t32.predict(image)
    p16, e16 = t16.predict(image)
    assert e16.dtype == BF16
    # measured: embeddings 0.97 %, probabilities 0.004
    assert _rel(e16, e32) < 0.03 and float((p16 - p32).abs().max()) < 0.02
    assert len(tag_images(t16, image).tags) == 2


def test_ssen_bf16():
    from aware_restore.core.ssen import load_ssen
    from aware_restore.core.ssen.infer import super_resolve

    m32, m16 = load_ssen(None), load_ssen(None).to(BF16)  # the shipped model
    g = torch.Generator().manual_seed(2)
    lr, ref = torch.rand(1, 3, 24, 28, generator=g), torch.rand(1, 3, 130, 90, generator=g)
    for r in (None, ref):  # self-similarity and a reference of another size (antialiased resize in float32)
        a, b = super_resolve(m32, lr, r), super_resolve(m16, lr, r)
        assert b.dtype == BF16 and b.shape == a.shape == (1, 3, 96, 112) and torch.isfinite(b).all()
        assert float((a - b.float()).abs().max()) > 0  # it really ran in bf16
        assert float((a - b.float()).abs().mean()) * 255 < 1.5  # measured 0.37 8-bit levels for both
        a, b = super_resolve(m32, lr, r, tile=16, overlap=4), super_resolve(m16, lr, r, tile=16, overlap=4)
        assert float((a - b.float()).abs().mean()) * 255 < 1.5  # tiled (whole-image match in fp32): 0.36


def test_seesr_bf16():
    """SeeSR's UNet + ControlNet (with RCA) on the fixture release folder: one CFG-pair noise prediction."""
    from aware_restore.core.seesr import load_seesr
    from aware_restore.core.seesr.sampler import SamplerOptions, build_conditioning, predict_noise

    u32, c32 = load_seesr(FIX / "seesr")
    u16, c16 = load_seesr(FIX / "seesr", dtype=BF16)
    assert u16.dtype == BF16 and c16.dtype == BF16
    g = torch.Generator().manual_seed(3)
    ctx = u32.config.cross_attention_dim
    text, embeds = torch.randn(1, 77, ctx, generator=g), torch.randn(1, 145, 512, generator=g)
    cond, x = torch.rand(1, 3, 64, 64, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    with torch.no_grad():
        e32 = predict_noise(u32, c32, x, 500, build_conditioning(text, text, embeds, cond, 1, cfg=True),
                            SamplerOptions())
        c = build_conditioning(text.to(BF16), text.to(BF16), embeds.to(BF16), cond.to(BF16), 1, cfg=True)
        e16 = predict_noise(u16, c16, x.to(BF16), 500, c, SamplerOptions())
    assert torch.isfinite(e16).all()  # returned in float32 for the (float32) sampler state
    assert _rel(e16, e32) < 0.03, _rel(e16, e32)  # measured 1.6 %
