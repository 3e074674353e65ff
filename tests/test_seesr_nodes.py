"""SeeSR nodes through the ComfyUI test double (tiny SeeSR fixtures + tiny SD2 stand-in + tiny RAM/DAPE)."""

from __future__ import annotations

import comfy.model_management
import comfy.utils
import pytest
import torch
from aware_restore.core.ram import DapeEmbeds
from aware_restore.core.seesr import SD2_LATENT_SCALE

SMALL = {"steps": 2, "tile_size": 0}


@pytest.fixture(scope="module")
def nodes(comfy_env):
    from aware_restore.nodes import dape, seesr

    return seesr, dape


@pytest.fixture(scope="module")
def parts(nodes, comfy_env):
    import sd_nodes

    seesr, dape = nodes
    model = seesr.SeeSRLoader.execute("seesr", "fp32").args[0]
    _, clip, vae = sd_nodes.CheckpointLoaderSimple.execute("512-base-ema.safetensors").args
    tagger = dape.DAPELoader.execute("ram_swin_large_14m.pth", "DAPE.pth").args[0]
    image = torch.rand(1, 24, 32, 3, generator=torch.Generator().manual_seed(3))
    tags, _, embeds = dape.DAPETagger.execute(tagger, image).args
    return {"model": model, "clip": clip, "vae": vae, "tagger": tagger, "image": image, "tags": tags[0], "embeds": embeds}


def _cond(clip, text):
    import sd_nodes
    return sd_nodes.CLIPTextEncode.execute(clip, text).args[0]


def test_schemas(nodes, comfy_env):
    seesr, _ = nodes
    assert [n.GET_SCHEMA().node_id for n in seesr.NODES] == ["SeeSRLoader", "SeeSRPrompt", "SeeSRLREmbedding",
                                                             "SeeSRSampler", "SeeSRUpscale"]
    for n in seesr.NODES:
        s = n.GET_SCHEMA()
        assert all(i.tooltip for i in s.inputs) and all(o.tooltip for o in s.outputs), s.node_id
        assert s.node_id in comfy_env.node_classes
    loader = seesr.SeeSRLoader.GET_SCHEMA().inputs[0]
    assert loader.options == ["seesr"] and loader.default == "seesr"


def test_loader_and_errors(nodes, parts):
    seesr, _ = nodes
    model = parts["model"]
    from aware_restore.core.seesr import SeeSRPair
    from aware_restore.nodes.common import ModelPayload

    assert isinstance(model, ModelPayload) and model.arch == "seesr"
    pair = model.patcher.model
    assert isinstance(pair, SeeSRPair)
    assert sum(".image_attentions." in k for k in pair.state_dict()) == 104 + 52
    with pytest.raises(FileNotFoundError, match="searched"):
        seesr.SeeSRLoader.execute("nope", "fp32")
    with pytest.raises(TypeError, match="Load SeeSR"):
        seesr.SeeSRSampler.execute(parts["tagger"], [], [], parts["embeds"], parts["image"], {"samples": None})


def test_prompt_node(nodes):
    seesr, _ = nodes
    pos, neg = seesr.SeeSRPrompt.execute("cat, dog", "a photo").args
    assert pos == "cat, dog, a photo,clean, high-resolution, 8k"
    assert neg == "dotted, noise, blur, lowres, smooth"


def test_lr_embedding_node(nodes, parts):
    seesr, _ = nodes
    latent, cond = seesr.SeeSRLREmbedding.execute(parts["vae"], parts["image"], 4, 64).args
    # 32x24 -> x4 = 128x96 (no pre-scale: short side 24 >= 64//4) -> latent 12x16
    assert tuple(cond.shape) == (1, 96, 128, 3)
    assert tuple(latent["samples"].shape) == (1, 4, 12, 16)
    torch.testing.assert_close(latent["samples"], parts["vae"].encode(cond))
    # an RGBA image is accepted (alpha dropped)
    rgba = torch.cat([parts["image"], torch.ones(1, 24, 32, 1)], -1)
    latent2, _ = seesr.SeeSRLREmbedding.execute(parts["vae"], rgba, 4, 64).args
    torch.testing.assert_close(latent2["samples"], latent["samples"])


def _sample(seesr, parts, **kw):
    latent, cond = seesr.SeeSRLREmbedding.execute(parts["vae"], parts["image"], 4, 64).args
    pos, neg = seesr.SeeSRPrompt.execute(parts["tags"]).args
    args = dict(seed=7, **SMALL)
    args.update(kw)
    return seesr.SeeSRSampler.execute(parts["model"], _cond(parts["clip"], pos), _cond(parts["clip"], neg),
                                      parts["embeds"], cond, latent, **args).args[0], latent


def test_sampler_node(nodes, parts):
    seesr, _ = nodes
    comfy.model_management.loaded_calls.clear()
    comfy.utils.updates.clear()
    out, latent = _sample(seesr, parts)
    assert set(out) == {"samples"} and out["samples"].shape == latent["samples"].shape
    assert torch.isfinite(out["samples"]).all()
    assert any(parts["model"].patcher in call["models"] for call in comfy.model_management.loaded_calls)
    assert comfy.utils.updates[-1][:2] == (2, 2)
    again, _ = _sample(seesr, parts)
    torch.testing.assert_close(again["samples"], out["samples"], atol=0, rtol=0)
    other, _ = _sample(seesr, parts, seed=8)
    assert (other["samples"] - out["samples"]).abs().max() > 1e-3
    # tiling on, latent fits in one tile -> identical to untiled
    tiled, _ = _sample(seesr, parts, tile_size=16, tile_overlap=4)
    torch.testing.assert_close(tiled["samples"], out["samples"], atol=0, rtol=0)
    # a LATENT from the node is unscaled: rescaling is undone on output
    assert out["samples"].abs().mean() > 0.5 * (out["samples"] * SD2_LATENT_SCALE).abs().mean() / SD2_LATENT_SCALE


def test_sampler_interrupt(nodes, parts):
    seesr, _ = nodes
    comfy.utils.updates.clear()
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        _sample(seesr, parts, steps=3)
    assert comfy.utils.updates == []  # stopped at the first step's progress check


def test_upscale_node(nodes, parts):
    seesr, _ = nodes
    out = seesr.SeeSRUpscale.execute(parts["model"], parts["tagger"], parts["clip"], parts["vae"], parts["image"],
                                     upscale=4, process_size=64, seed=1, color_fix="wavelet", **SMALL).args[0]
    assert tuple(out.shape) == (1, 96, 128, 3)
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    assert isinstance(parts["embeds"], DapeEmbeds)
