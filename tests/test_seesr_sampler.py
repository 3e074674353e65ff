"""The SeeSR sampler and pipeline on the tiny parity models: determinism, tiling, schedulers, start points."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from aware_restore.core.ram import DapeEmbeds
from aware_restore.core.seesr import (
    SCHEDULER_NAMES,
    SamplerOptions,
    UpscaleOptions,
    build_prompts,
    load_seesr,
    predict_noise,
    sample,
    upscale,
)
from aware_restore.core.seesr.sampler import build_conditioning

FIX = Path(__file__).parent / "fixtures" / "seesr"


@pytest.fixture(scope="module")
def models():
    return load_seesr(FIX)


def _inputs(seed=0, h=12, w=16):
    g = torch.Generator().manual_seed(seed)
    return {"lr_latent": torch.randn(1, 4, h, w, generator=g), "cond_image": torch.rand(1, 3, 8 * h, 8 * w, generator=g),
                "positive": torch.randn(1, 77, 32, generator=g), "negative": torch.randn(1, 77, 32, generator=g),
                "image_embeds": torch.randn(1, 145, 512, generator=g)}


def _run(models, seed=1, progress=None, **opts):
    return sample(*models, **_inputs(h=8, w=8), generator=torch.Generator().manual_seed(seed),
                  opts=SamplerOptions(**{"steps": 1, **opts}), progress=progress)


def test_seed_determinism_and_progress(models):
    calls = []
    a = _run(models, steps=2, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 2), (2, 2)]
    torch.testing.assert_close(_run(models, steps=2), a, atol=0, rtol=0)
    a = _run(models)
    assert (_run(models, seed=2) - a).abs().max() > 1e-3
    assert (_run(models, start="noise") - a).abs().max() > 1e-3
    # one tile covering the whole latent == untiled
    torch.testing.assert_close(_run(models, tile_size=8, tile_overlap=4), _run(models, tile_size=None), atol=0, rtol=0)


def test_tiles_batched_equal_one_by_one(models):
    inp = _inputs()
    x = torch.cat([inp["lr_latent"]] * 2)
    cond = build_conditioning(inp["positive"], inp["negative"], inp["image_embeds"], inp["cond_image"], 1, True)
    with torch.no_grad():
        one = predict_noise(*models, x, 501, cond, SamplerOptions(tile_size=8, tile_overlap=4, tile_batch=1))
        many = predict_noise(*models, x, 501, cond, SamplerOptions(tile_size=8, tile_overlap=4, tile_batch=4))
        whole = predict_noise(*models, x, 501, cond, SamplerOptions(tile_size=None))
    torch.testing.assert_close(many, one, atol=1e-5, rtol=1e-5)
    assert (one - whole).abs().max() > 1e-4  # tiles see less context: really tiled


def test_cfg_batch_order():
    pos, neg = torch.ones(1, 77, 4), torch.zeros(1, 77, 4)
    img = torch.randn(1, 145, 512)
    c = build_conditioning(pos, neg, img, torch.rand(1, 3, 8, 8), 1, True)
    assert c.text[0].eq(0).all() and c.text[1].eq(1).all()  # [negative, positive]
    torch.testing.assert_close(c.image[0], c.image[1])  # DAPE duplicated, not zeroed
    # prompts longer than one 77-token chunk are matched by repetition (as ComfyUI does)
    c = build_conditioning(torch.ones(1, 154, 4), neg, img, torch.rand(1, 3, 8, 8), 1, True)
    assert c.text.shape == (2, 154, 4)


@pytest.mark.parametrize("name", [n for n in SCHEDULER_NAMES if n != "ddpm"])
def test_other_schedulers_run(models, name):
    out = _run(models, scheduler=name)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_prompts_and_pipeline(models):
    assert build_prompts("cat, dog") == ("cat, dog, ,clean, high-resolution, 8k", "dotted, noise, blur, lowres, smooth")
    seen = []

    def enc(texts):
        seen.extend(texts)
        return torch.stack([torch.full((77, 32), float(len(t)) / 50) for t in texts])

    def vae_encode(x):
        return torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4] * 2 - 1

    def vae_decode(z):
        return torch.nn.functional.interpolate(z[:, :3], scale_factor=8) * 0.5 + 0.5

    img = torch.rand(2, 3, 13, 17, generator=torch.Generator().manual_seed(0))
    emb = DapeEmbeds(torch.randn(2, 145, 512), ("a", "b"))
    opts = UpscaleOptions(process_size=64, sampler=SamplerOptions(steps=1))
    out = upscale(img, *models, encode_text=enc, vae_encode=vae_encode, vae_decode=vae_decode, dape_embeds=emb,
                  options=opts)
    # 17x13 -> pre-scale to (int(16/13*17), 16) = (20, 16) -> x4 (80, 64) -> final exactly 68x52
    assert out.shape == (2, 3, 52, 68) and 0 <= out.min() and out.max() <= 1
    assert seen == [opts.negative_prompt, "a, ,clean, high-resolution, 8k", opts.negative_prompt,
                    "b, ,clean, high-resolution, 8k"]
    with pytest.raises(ValueError, match="DAPE"):
        upscale(img, *models, encode_text=enc, vae_encode=vae_encode, vae_decode=vae_decode)


def test_upscale_checks_its_inputs_once(models, monkeypatch):
    """Issue 19: the image was scanned for NaN three times per SeeSR image (upscale, condition_image, sample) and
    again by the colour fix; now once per entry: the image and the DAPE embeddings, nothing nested."""
    from aware_restore.core import image as im

    scanned = []
    real = im._not_finite
    monkeypatch.setattr(im, "_not_finite", lambda x: scanned.append(tuple(x.shape)) or real(x))
    img = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    emb = DapeEmbeds(torch.randn(2, 145, 512), ("a", "b"))
    opts = UpscaleOptions(process_size=32, sampler=SamplerOptions(steps=2))
    kw = {"encode_text": lambda texts: torch.zeros(len(texts), 77, 32),
          "vae_encode": lambda x: torch.nn.functional.avg_pool2d(x, 8).repeat(1, 2, 1, 1)[:, :4],
          "vae_decode": lambda z: torch.nn.functional.interpolate(z[:, :3], scale_factor=8), "options": opts}
    upscale(img, *models, dape_embeds=emb, **kw)
    assert scanned == [(2, 3, 8, 8), (2, 145, 512)]
    scanned.clear()
    upscale(img, *models, dape=lambda x: emb, **kw)  # embeddings made inside: only the image is input
    assert scanned == [(2, 3, 8, 8)]
    scanned.clear()  # a nested entry called on its own still checks its input
    from aware_restore.core.seesr import condition_image, plan_sizes

    condition_image(img[:1], plan_sizes(8, 8, 4, 32))
    assert scanned == [(1, 3, 8, 8)]
    with pytest.raises(ValueError, match="not finite"):
        upscale(torch.full((1, 3, 8, 8), float("nan")), *models, dape_embeds=emb, **kw)
