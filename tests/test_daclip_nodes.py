"""DA-CLIP nodes through the ComfyUI double (loader, encode, classify, degradation from text), the example
workflow, and the ``classify`` CLI command."""

from __future__ import annotations

import json
import subprocess
import sys

import comfy.model_management as mm
import comfy.utils
import pytest
import torch
import torch.nn.functional as F
from aware_restore.core.daclip import (
    DEGRADATIONS,
    DaclipEmbeds,
    classify,
    encode_images,
    load_daclip,
)
from aware_restore.core.registry import WrongModelError
from conftest import FIXTURES, WORKFLOWS, random_image

IDS = ("DACLIPLoader", "DACLIPEncode", "DACLIPClassifyDegradation", "DACLIPDegradationFromText")


@pytest.fixture()
def tiny(nodes):
    return nodes["DACLIPLoader"].execute("daclip_ViT-B-32.pt", "auto").args[0]


@pytest.fixture(scope="module")
def reference_model():
    return load_daclip(FIXTURES / "daclip" / "daclip_tiny.safetensors")


def test_schemas_and_loader_choices(nodes):
    from aware_restore.nodes import daclip as daclip_nodes

    for cls in nodes.values():
        schema = cls.GET_SCHEMA()
        assert schema.category == "AwareRestore/DA-CLIP"
        for port in [*schema.inputs, *schema.outputs]:
            assert port.tooltip, f"{schema.node_id}.{port.id} has no tooltip"
    options = nodes["DACLIPLoader"].GET_SCHEMA().inputs[0].options
    assert {"daclip_ViT-B-32.pt", "daclip_tiny.safetensors"} <= set(options)
    labels = nodes["DACLIPClassifyDegradation"].GET_SCHEMA().inputs[2]
    assert labels.multiline and labels.default.splitlines() == list(DEGRADATIONS)
    assert daclip_nodes.DACLIP_MODEL.io_type == "DACLIP_MODEL"
    assert daclip_nodes.DACLIP_EMBEDS.io_type == "DACLIP_EMBEDS"
    assert daclip_nodes.DaclipEmbeds is DaclipEmbeds


def test_loader_gives_patcher_payload_and_loads_through_comfy(nodes, tiny):
    from aware_restore.nodes.common import ModelPayload

    assert isinstance(tiny, ModelPayload) and tiny.arch == "daclip"
    assert tiny.config.embed_dim == 32 and tiny.name == "daclip_ViT-B-32.pt"
    mm.loaded_calls.clear()
    nodes["DACLIPEncode"].execute(tiny, random_image(1, 20, 30))
    assert mm.loaded_calls and mm.loaded_calls[-1]["models"] == [tiny.patcher]
    assert mm.loaded_calls[-1]["memory_required"] > 0
    sft = nodes["DACLIPLoader"].execute("daclip_tiny.safetensors", "fp32").args[0]
    a, b = tiny.patcher.model.state_dict(), sft.patcher.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_encode_keeps_batch_and_matches_library(nodes, tiny, reference_model):
    img = random_image(3, 40, 70)
    comfy.utils.updates.clear()
    embeds = nodes["DACLIPEncode"].execute(tiny, img).args[0]
    assert isinstance(embeds, DaclipEmbeds) and embeds.clean.shape == (3, 32) and len(embeds) == 3
    assert comfy.utils.updates and comfy.utils.updates[-1] == (3, 3)
    ref = encode_images(reference_model, img.movedim(-1, 1))
    assert torch.allclose(embeds.clean, ref.clean, atol=1e-5)
    assert torch.allclose(embeds.degradation, ref.degradation, atol=1e-5)
    assert not torch.allclose(embeds.degradation[0], embeds.degradation[1], atol=1e-3)  # per image


def test_encode_handles_rgba_gray_and_tiny_images(nodes, tiny):
    rgb = random_image(1, 33, 47)
    rgba = torch.cat([rgb, torch.zeros(1, 33, 47, 1)], -1)
    a = nodes["DACLIPEncode"].execute(tiny, rgb).args[0]
    b = nodes["DACLIPEncode"].execute(tiny, rgba).args[0]
    assert torch.equal(a.clean, b.clean)
    gray = nodes["DACLIPEncode"].execute(tiny, random_image(2, 16, 16, c=1)).args[0]
    assert gray.clean.shape == (2, 32)
    one = nodes["DACLIPEncode"].execute(tiny, random_image(1, 1, 1)).args[0]
    assert torch.isfinite(one.clean).all()


def test_classify_outputs_table_and_top_k(nodes, tiny, reference_model):
    img = random_image(2, 48, 64, seed=3)
    out = nodes["DACLIPClassifyDegradation"].execute(tiny, img, "\n".join(DEGRADATIONS), 3)
    lines, top_p, table = out.args
    probs = classify(reference_model, img.movedim(-1, 1))
    assert len(lines.splitlines()) == 2
    for b, line in enumerate(lines.splitlines()):
        names = line.split(", ")
        assert len(names) == 3
        expect = [DEGRADATIONS[i] for i in probs[b].topk(3).indices.tolist()]
        assert names == expect
    assert isinstance(top_p, list) and len(top_p) == 2
    assert top_p == pytest.approx(probs.max(dim=1).values.tolist(), abs=1e-5)
    rows = table.splitlines()
    assert len(rows) == 11 and all(any(r.startswith(lbl) for r in rows) for lbl in DEGRADATIONS)
    assert table.count("*") == 2
    assert out.ui.as_dict() == {"text": (table,)}


def test_classify_with_user_labels(nodes, tiny):
    out = nodes["DACLIPClassifyDegradation"].execute(tiny, random_image(1, 32, 32), "a rainy photo\n\nfoggy\n", 5)
    lines, top_p, table = out.args
    assert set(lines.split(", ")) == {"a rainy photo", "foggy"}  # top_k clipped to the number of labels
    assert len(table.splitlines()) == 3 and 0.5 <= top_p[0] <= 1
    with pytest.raises(ValueError, match="no degradation labels"):
        nodes["DACLIPClassifyDegradation"].execute(tiny, random_image(1, 32, 32), "  \n", 1)


def test_degradation_from_text_overrides_degradation_only(nodes, tiny, reference_model):
    img = random_image(2, 40, 50, seed=4)
    plain = nodes["DACLIPEncode"].execute(tiny, img).args[0]
    node = nodes["DACLIPDegradationFromText"]
    emb = node.execute(tiny, img, "hazy", "", True).args[0]
    assert torch.equal(emb.clean, plain.clean)
    with torch.no_grad():
        text = reference_model.encode_text(["hazy"])
    cos = F.cosine_similarity(emb.degradation, text.expand(2, -1), dim=1)
    assert torch.allclose(cos, torch.ones(2), atol=1e-5)
    assert torch.allclose(emb.degradation.norm(dim=1), plain.degradation.norm(dim=1), atol=1e-4)
    raw = node.execute(tiny, img, "hazy", "", False).args[0]
    assert torch.allclose(raw.degradation, text.expand(2, -1), atol=1e-5)
    custom = node.execute(tiny, img, "hazy", "dark and noisy", False).args[0]
    with torch.no_grad():
        assert torch.allclose(custom.degradation[0], reference_model.encode_text(["dark and noisy"])[0], atol=1e-5)


def test_wrong_inputs_give_clear_errors(nodes, tiny, comfy_env):
    with pytest.raises(TypeError, match="Load DA-CLIP Model"):
        nodes["DACLIPEncode"].execute("not a model", random_image(1, 8, 8))
    bad = comfy_env.models_dir / "daclip" / "universal-ir.safetensors"
    from safetensors.torch import save_file

    save_file({"init_conv.weight": torch.zeros(4, 6, 3, 3), "final_conv.weight": torch.zeros(3, 4, 3, 3),
               "downs.0.0.block1.proj.weight": torch.zeros(4, 4, 3, 3)}, str(bad))
    try:
        with pytest.raises(WrongModelError) as err:
            nodes["DACLIPLoader"].execute("universal-ir.safetensors", "auto")
        msg = str(err.value)
        assert "DA-CLIP" in msg and str(comfy_env.models_dir / "daclip") in msg and "IR-SDE" in msg
    finally:
        bad.unlink()
    with pytest.raises(FileNotFoundError, match="DA-CLIP"):
        nodes["DACLIPLoader"].execute("missing.pt", "auto")


def test_interrupt_stops_encoding(nodes, tiny):
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        nodes["DACLIPEncode"].execute(tiny, random_image(2, 16, 16))


def test_classify_workflow_runs(comfy_env, reference_model):
    api = json.loads((WORKFLOWS / "api" / "daclip_classify.json").read_text())
    assert api["2"]["inputs"]["model_name"] == "daclip_ViT-B-32.pt"  # the kit's tiny model has the official name
    res = comfy_env.run(api)
    top3 = res.ui["4"]["text"][0]
    table = res.ui["5"]["text"][0]
    assert res.ui["3"]["text"][0] == table
    import numpy as np
    from PIL import Image

    img = torch.from_numpy(np.asarray(Image.open(comfy_env.input_dir / "example.png"), dtype=np.float32) / 255)
    probs = classify(reference_model, img.permute(2, 0, 1)[None])
    assert top3.split(", ") == [DEGRADATIONS[i] for i in probs[0].topk(3).indices.tolist()]
    assert len(table.splitlines()) == 11


def test_cli_classify(comfy_env):
    image = str(comfy_env.input_dir / "example.png")
    cmd = [sys.executable, "-m", "aware_restore", "--models-dir", str(comfy_env.models_dir), "classify"]
    out = subprocess.run([*cmd, image, image, "--json"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["model"].endswith(".pt") or report["model"].endswith(".safetensors")
    assert len(report["images"]) == 2
    first = report["images"][0]
    assert first["image"] == image and list(first["probabilities"]) == list(DEGRADATIONS)
    assert sum(first["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert first["top"] == max(first["probabilities"], key=first["probabilities"].get)
    text = subprocess.run([*cmd, image, "--model", str(comfy_env.models_dir / "daclip" / "daclip_ViT-B-32.pt")],
                          capture_output=True, text=True, check=False)
    assert text.returncode == 0, text.stderr
    assert first["top"] in text.stdout and "example.png" in text.stdout
    bad = subprocess.run([*cmd, image, "--model", str(comfy_env.models_dir / "nope.pt")], capture_output=True,
                         text=True, check=False)
    assert bad.returncode != 0 and "nope.pt" in bad.stderr
