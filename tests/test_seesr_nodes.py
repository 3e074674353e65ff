"""SeeSR nodes through the ComfyUI test double (tiny SD2 stand-in + tiny RAM/DAPE): schemas, prompt builder, LR
embedding. The native model nodes are tested in tests/test_seesr_native.py (stand-in modules) and in a real
ComfyUI (tests/test_comfyui_integration.py)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def nodes(comfy_env):
    from aware_restore.nodes import dape, seesr

    return seesr, dape


@pytest.fixture(scope="module")
def parts(nodes, comfy_env):
    import sd_nodes

    _, dape = nodes
    _, clip, vae = sd_nodes.CheckpointLoaderSimple.execute("512-base-ema.safetensors").args
    tagger = dape.DAPELoader.execute("ram_swin_large_14m.pth", "DAPE.pth").args[0]
    image = torch.rand(1, 24, 32, 3, generator=torch.Generator().manual_seed(3))
    tags, _, embeds = dape.DAPETagger.execute(tagger, image).args
    return {"clip": clip, "vae": vae, "tagger": tagger, "image": image, "tags": tags[0], "embeds": embeds}


def _cond(clip, text):
    import sd_nodes
    return sd_nodes.CLIPTextEncode.execute(clip, text).args[0]


def test_schemas(nodes, comfy_env):
    seesr, _ = nodes
    assert [n.GET_SCHEMA().node_id for n in seesr.NODES] == ["SeeSRLoader", "SeeSRPrompt", "SeeSRTextEncode",
                                                             "SeeSRLREmbedding", "SeeSRApply", "SeeSRTiledSampling",
                                                             "SeeSRFinalResize"]
    for n in seesr.NODES:
        s = n.GET_SCHEMA()
        assert all(i.tooltip for i in s.inputs) and all(o.tooltip for o in s.outputs), s.node_id
        assert s.node_id in comfy_env.node_classes
    loader = seesr.SeeSRLoader.GET_SCHEMA().inputs[0]
    assert loader.options == ["seesr"] and loader.default == "seesr"


def test_loader_lists_release_folders_and_refuses_bad_names(nodes, comfy_env):
    seesr, _ = nodes
    with pytest.raises(FileNotFoundError, match="searched"):
        seesr.SeeSRLoader.execute("nope", "fp32")
    with pytest.raises(FileNotFoundError):
        seesr.SeeSRLoader.execute("../dape", "fp32")


def test_apply_refuses_wrong_payloads(nodes, parts):
    seesr, _ = nodes
    from aware_restore.core.errors import PayloadError

    with pytest.raises(PayloadError, match="Load SeeSR"):
        seesr.SeeSRApply.execute(None, [], [], parts["tagger"], parts["embeds"], parts["image"])


def test_prompt_node(nodes):
    seesr, _ = nodes
    pos, neg = seesr.SeeSRPrompt.execute("cat, dog", "a photo").args
    assert pos == "cat, dog, a photo,clean, high-resolution, 8k"
    assert neg == "dotted, noise, blur, lowres, smooth"


def test_lr_embedding_node(nodes, parts):
    seesr, _ = nodes
    latent, cond, plan = seesr.SeeSRLREmbedding.execute(parts["vae"], parts["image"], 4, 64).args
    # 32x24 -> x4 = 128x96 (no pre-scale: short side 24 >= 64//4) -> latent 12x16
    assert tuple(cond.shape) == (1, 96, 128, 3)
    assert tuple(latent["samples"].shape) == (1, 4, 12, 16)
    assert (plan.input, plan.process, plan.final) == ((32, 24), (128, 96), (128, 96))
    torch.testing.assert_close(latent["samples"], parts["vae"].encode(cond))
    # an RGBA image is accepted (alpha dropped)
    rgba = torch.cat([parts["image"], torch.ones(1, 24, 32, 1)], -1)
    latent2, _, _ = seesr.SeeSRLREmbedding.execute(parts["vae"], rgba, 4, 64).args
    torch.testing.assert_close(latent2["samples"], latent["samples"])
