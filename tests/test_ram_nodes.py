"""DAPELoader / DAPETagger through the ComfyUI test double, and the dape_tagging workflow."""

from __future__ import annotations

import json
from pathlib import Path

import comfy.model_management
import comfy.utils
import numpy as np
import pytest
import torch
from PIL import Image

from aware_restore.core.ram import DapeEmbeds, Tagger, load_tagger
from aware_restore.core.registry import WrongModelError
from conftest import WORKFLOWS

FIX = Path(__file__).resolve().parent / "fixtures" / "ram"


@pytest.fixture(scope="module")
def nodes(comfy_env):
    from aware_restore.nodes import dape

    return dape


@pytest.fixture(scope="module")
def loaded(nodes):
    with_dape = nodes.DAPELoader.execute("ram_swin_large_14m.pth", "DAPE.pth").args[0]
    plain = nodes.DAPELoader.execute("ram_swin_large_14m.pth", "none").args[0]
    return {"dape": with_dape, "ram": plain}


@pytest.fixture(scope="module")
def fixture_image():
    from safetensors.torch import load_file

    u8 = load_file(str(FIX / "io.safetensors"))["image0.u8"]
    return u8.float().unsqueeze(0) / 255.0  # IMAGE [1,H,W,3]


@pytest.fixture(scope="module")
def expected():
    return json.loads((FIX / "io.json").read_text())["outputs"]


def test_schema_defaults_and_types(nodes, comfy_env):
    schema = nodes.DAPELoader.GET_SCHEMA()
    ram_in, dape_in = schema.inputs
    assert ram_in.default == "ram_swin_large_14m.pth" and dape_in.default == "DAPE.pth"
    assert "none" in dape_in.options
    tagger = nodes.DAPETagger.GET_SCHEMA()
    assert [o.is_output_list for o in tagger.outputs] == [True, False, False]
    assert all(i.tooltip for i in [*schema.inputs, *tagger.inputs]) and all(o.tooltip for o in tagger.outputs)
    assert {"DAPELoader", "DAPETagger"} <= set(comfy_env.node_classes)


def test_loader_merges_dape(loaded):
    dape, ram = loaded["dape"].descriptor, loaded["ram"].descriptor
    assert dape.extra["dape_merged"] and not ram.extra["dape_merged"]
    assert isinstance(loaded["dape"].patcher.model, Tagger)
    assert dape.extra["dape_file"] == "DAPE.pth" and ram.extra["dape_file"] is None


@pytest.mark.parametrize("which", ["dape", "ram"])
def test_tagger_matches_reference(nodes, loaded, fixture_image, expected, which):
    comfy.model_management.loaded_calls.clear()
    out = nodes.DAPETagger.execute(loaded[which], fixture_image)
    tags, text, payload = out.args
    assert tags == expected[which]["tags"] and text == expected[which]["tags"][0]
    assert out.ui["text"] == expected[which]["tags"]
    assert isinstance(payload, DapeEmbeds) and payload.embeds.shape == (1, 145, 512)
    assert payload.tags == tuple(expected[which]["tags"])
    assert comfy.model_management.loaded_calls and loaded[which].patcher in comfy.model_management.loaded_calls[-1][
        "models"]


def test_tagger_batch_is_per_image(nodes, loaded, fixture_image):
    noise = torch.rand(fixture_image.shape, generator=torch.Generator().manual_seed(3))
    batch = torch.cat([fixture_image, noise])
    comfy.utils.updates.clear()
    tags, text, payload = nodes.DAPETagger.execute(loaded["dape"], batch).args
    assert len(tags) == 2 and text.split("\n") == tags and payload.tags == tuple(tags)
    assert tags[0] != tags[1]
    assert comfy.utils.updates[-1] == (2, 2)
    for i in range(2):
        single, _, single_payload = nodes.DAPETagger.execute(loaded["dape"], batch[i:i + 1]).args
        assert single == [tags[i]]
        torch.testing.assert_close(payload.embeds[i:i + 1], single_payload.embeds, atol=1e-5, rtol=1e-5)


def test_tagger_options(nodes, loaded, fixture_image, expected):
    full = expected["dape"]["tags"][0].split(", ")
    tags, _, _ = nodes.DAPETagger.execute(loaded["dape"], fixture_image, 0.0, "washer, YURT", 0).args
    assert tags[0].split(", ") == [t for t in full if t not in ("washer", "yurt")]
    tags, _, _ = nodes.DAPETagger.execute(loaded["dape"], fixture_image, 0.0, "", 2).args
    assert len(tags[0].split(", ")) == 2 and set(tags[0].split(", ")) <= set(full)
    tags, _, _ = nodes.DAPETagger.execute(loaded["dape"], fixture_image, 0.99, "", 0).args
    assert tags == [""]


def test_rgba_and_interrupt(nodes, loaded, fixture_image):
    rgba = torch.cat([fixture_image, torch.zeros_like(fixture_image[..., :1])], -1)
    assert nodes.DAPETagger.execute(loaded["ram"], rgba).args[0] == nodes.DAPETagger.execute(
        loaded["ram"], fixture_image).args[0]
    comfy.model_management.interrupt_current_processing(True)
    with pytest.raises(comfy.model_management.InterruptProcessingException):
        nodes.DAPETagger.execute(loaded["ram"], fixture_image)


def test_loader_errors(nodes):
    with pytest.raises(WrongModelError, match=r"DAPE LoRA.*ram_swin_large_14m.pth.*Folders searched"):
        nodes.DAPELoader.execute("DAPE.pth", "none")
    with pytest.raises(WrongModelError, match="both the RAM model and the DAPE LoRA"):
        nodes.DAPELoader.execute("ram_swin_large_14m.pth", "ram_swin_large_14m.pth")
    with pytest.raises(FileNotFoundError, match="dape"):
        nodes.DAPELoader.execute("missing.pth", "none")
    with pytest.raises(TypeError, match="DAPE_MODEL"):
        nodes.DAPETagger.execute(object(), torch.zeros(1, 8, 8, 3))


def test_workflow_runs(comfy_env, expected):
    res = comfy_env.run(WORKFLOWS / "api" / "dape_tagging.json")
    img = np.asarray(Image.open(comfy_env.input_dir / "example.png").convert("RGB"))
    tagger = load_tagger(FIX / "ram_tiny.pth", FIX / "dape_tiny.pth")
    want = tagger.tag(torch.from_numpy(img.copy()).permute(2, 0, 1).unsqueeze(0).float() / 255.0)
    assert res.ui["3"]["text"] == want  # shown on the tagger node
    assert res.ui["4"]["text"] == want  # and in the preview
    assert want[0]  # a non-empty tag string


def test_tagger_antialias_input(nodes, loaded, fixture_image):
    _, _, off = nodes.DAPETagger.execute(loaded["dape"], fixture_image, 0.0, "", 0, False).args
    _, _, on = nodes.DAPETagger.execute(loaded["dape"], fixture_image, 0.0, "", 0, True).args
    want = loaded["dape"].patcher.model.embed(fixture_image.permute(0, 3, 1, 2), antialias=False)
    torch.testing.assert_close(off.embeds, want, atol=1e-6, rtol=1e-5)
    assert (off.embeds - on.embeds).abs().max() > 1e-3
