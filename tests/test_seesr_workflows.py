"""The SeeSR example workflows (API twins) against the test double: every input valid, the native graph wired as
documented (core KSampler, denoise 1.0, from the VAE-encoded LR image). They run in a real ComfyUI in
tests/test_comfyui_integration.py (the double has no diffusion sampler)."""

from __future__ import annotations

import json

import pytest
from conftest import WORKFLOWS

NAMES = ["seesr_x4", "seesr_x4_tiled", "seesr_turbo"]


def _load(name: str) -> dict:
    return json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())


def _by_type(wf: dict, ctype: str) -> tuple[str, dict]:
    (hit,) = [(k, v) for k, v in wf.items() if v["class_type"] == ctype]
    return hit


@pytest.mark.parametrize("name", NAMES)
def test_seesr_workflow_is_valid_and_native(comfy_env, name):
    wf = _load(name)
    ck_id, ck = _by_type(wf, "CheckpointLoaderSimple")
    expected = "sd_turbo.safetensors" if name == "seesr_turbo" else "512-base-ema.safetensors"
    assert ck["inputs"]["ckpt_name"] == expected
    ck["inputs"]["ckpt_name"] = "512-base-ema.safetensors"  # the double's models tree has one checkpoint name
    comfy_env.runner.validate(wf)
    _, ks = _by_type(wf, "KSampler")
    ap_id, ap = _by_type(wf, "SeeSRApply")
    lr_id, _ = _by_type(wf, "SeeSRLREmbedding")
    assert ks["inputs"]["denoise"] == 1.0 and ks["inputs"]["latent_image"] == [lr_id, 0]
    assert ks["inputs"]["positive"] == [ap_id, 1] and ks["inputs"]["negative"] == [ap_id, 2]
    assert ap["inputs"]["model"] == [ck_id, 0] and ap["inputs"]["image"] == [lr_id, 1]
    # batches: one conditioning with a row per image (no STRING list between the tagger and the sampler, which would
    # run the sampler once per image on the whole batch); the result resized to the official final size
    te_id, te = _by_type(wf, "SeeSRTextEncode")
    tg_id, _ = _by_type(wf, "DAPETagger")
    assert te["inputs"]["clip"] == [ck_id, 1] and te["inputs"]["dape_embeds"] == [tg_id, 2]
    assert ap["inputs"]["positive"] == [te_id, 0] and ap["inputs"]["negative"] == [te_id, 1]
    assert ap["inputs"]["dape_embeds"] == [tg_id, 2]
    assert not [v for v in wf.values() if v["class_type"] in ("SeeSRPrompt", "CLIPTextEncode")]
    fr_id, fr = _by_type(wf, "SeeSRFinalResize")
    cf_id, _ = _by_type(wf, "ARColorFix")
    _, save = _by_type(wf, "SaveImage")
    assert fr["inputs"] == {"image": [cf_id, 0], "seesr_size": [lr_id, 2]} and save["inputs"]["images"] == [fr_id, 0]
    tiled = [v for v in wf.values() if v["class_type"] == "SeeSRTiledSampling"]
    if name == "seesr_x4":
        assert not tiled and ks["inputs"]["model"] == [ap_id, 0]
    else:
        assert tiled and tiled[0]["inputs"]["model"] == [ap_id, 0]
        assert (tiled[0]["inputs"]["tile_size"], tiled[0]["inputs"]["tile_overlap"]) == (96, 32)
    if name == "seesr_turbo":
        assert (ks["inputs"]["steps"], ks["inputs"]["cfg"], ks["inputs"]["sampler_name"],
                ks["inputs"]["scheduler"]) == (2, 1.0, "ddpm", "simple")
    else:
        assert (ks["inputs"]["steps"], ks["inputs"]["cfg"], ks["inputs"]["sampler_name"],
                ks["inputs"]["scheduler"]) == (50, 5.5, "ddpm", "normal")
