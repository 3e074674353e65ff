"""IR-SDE nodes through the ComfyUI double: loader (both variants, wrong file), DACLIPRestore (DA-CLIP model or
embeds, batches, seeds, alpha, progress, interrupt, pairing errors), the example workflow, and the CLI."""

from __future__ import annotations

import json

import comfy.model_management as mm
import comfy.utils
import numpy as np
import pytest
import torch
from aware_restore.core.checkpoint import save_safetensors
from aware_restore.core.daclip import DaclipEmbeds
from aware_restore.core.irsde import ContextMismatchError
from aware_restore.core.registry import WrongModelError
from conftest import WORKFLOWS, random_image
from PIL import Image

IDS = ("IRSDELoader", "DACLIPRestore", "DACLIPLoader")
TINY_DACLIP = "daclip_tiny.safetensors"


@pytest.fixture()
def universal(nodes):
    return nodes["IRSDELoader"].execute("universal-ir.pth").args[0]


@pytest.fixture()
def daclip(nodes):
    return nodes["DACLIPLoader"].execute(TINY_DACLIP, "auto").args[0]


def test_schemas_and_loader_variants(nodes, universal):
    for node_id in ("IRSDELoader", "DACLIPRestore"):
        schema = nodes[node_id].GET_SCHEMA()
        assert schema.category == "AwareRestore/DA-CLIP"
        for port in [*schema.inputs, *schema.outputs]:
            assert port.tooltip, f"{node_id}.{port.id} has no tooltip"
    options = nodes["IRSDELoader"].GET_SCHEMA().inputs[0].options
    assert {"universal-ir.pth", "wild-ir.pth"} <= set(options)
    assert (universal.config.variant, universal.config.context_dim) == ("universal", 32)
    wild = nodes["IRSDELoader"].execute("wild-ir.pth").args[0]
    assert (wild.config.variant, wild.config.context_dim) == ("wild", 32)


def test_loader_wrong_file_names_irsde_and_folder(nodes, comfy_env):
    bad = comfy_env.models_dir / "irsde" / "not_irsde.safetensors"
    save_safetensors({"model.diffusion_model.out.0.weight": torch.zeros(2)}, bad)
    try:
        with pytest.raises(WrongModelError, match=r"IR-SDE.*models/irsde"):
            nodes["IRSDELoader"].execute("not_irsde.safetensors")
    finally:
        bad.unlink()


def test_restore_with_daclip_model_batch_safe_with_progress(nodes, universal, daclip):
    restore = nodes["DACLIPRestore"]
    img = random_image(2, 12, 20)
    comfy.utils.updates.clear()
    out = restore.execute(universal, img, daclip_model=daclip, seed=11, tile=0).args[0]
    assert out.shape == img.shape and 0 <= float(out.min()) and float(out.max()) <= 1
    assert comfy.utils.updates[-1] == (200, 200) and len(comfy.utils.updates) >= 200
    second = restore.execute(universal, img[1:], daclip_model=daclip, seed=12, tile=0).args[0]
    assert torch.equal(out[1:], second)  # image b of a batch == single run with seed + b
    assert (out[0] - out[1]).abs().max() > 1e-3


def test_restore_with_embeds_alpha_and_errors(nodes, universal):
    restore = nodes["DACLIPRestore"]
    g = torch.Generator().manual_seed(3)
    emb = DaclipEmbeds(torch.randn(1, 32, generator=g), torch.randn(1, 32, generator=g))
    rgba = random_image(1, 10, 14, c=4)
    out = restore.execute(universal, rgba, daclip_embeds=emb, seed=1, sampler="sde", tile=0).args[0]
    assert out.shape == (1, 10, 14, 4) and torch.equal(out[..., 3], rgba[..., 3])
    with pytest.raises(ValueError, match="daclip_model.*daclip_embeds"):
        restore.execute(universal, rgba)
    wide = DaclipEmbeds(torch.zeros(1, 768), torch.zeros(1, 768))
    with pytest.raises(ContextMismatchError, match=r"universal-ir.pth ↔ daclip_ViT-B-32.*wild-ir.pth ↔ wild-daclip"):
        restore.execute(universal, rgba, daclip_embeds=wide)
    with pytest.raises(TypeError, match="Load IR-SDE Model"):
        restore.execute("not a model", rgba, daclip_embeds=emb)


def test_restore_interrupts(nodes, universal):
    emb = DaclipEmbeds(torch.zeros(1, 32), torch.zeros(1, 32))
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        nodes["DACLIPRestore"].execute(universal, random_image(1, 8, 8), daclip_embeds=emb)


def test_workflow_classify_then_restore(comfy_env):
    prompt = json.loads((WORKFLOWS / "api" / "daclip_restore.json").read_text())
    types = {v["class_type"] for v in prompt.values()}
    assert {"DACLIPLoader", "DACLIPClassifyDegradation", "PreviewAny", "IRSDELoader", "DACLIPRestore",
            "SaveImage"} <= types
    # runs unchanged: the kits write tiny models under the official names (daclip_ViT-B-32.pt, universal-ir.pth)
    res = comfy_env.run(prompt)
    restore_id = next(k for k, v in prompt.items() if v["class_type"] == "DACLIPRestore")
    save_id = next(k for k, v in prompt.items() if v["class_type"] == "SaveImage")
    src = np.asarray(Image.open(comfy_env.input_dir / "example.png"))
    assert res.outputs[restore_id][0].shape == (1, *src.shape)
    saved = res.ui[save_id]["images"][0]
    assert np.asarray(Image.open(comfy_env.output_dir / saved["subfolder"] / saved["filename"])).shape == src.shape
    preview_id = next(k for k, v in prompt.items() if v["class_type"] == "PreviewAny")
    assert preview_id in res.ui


def test_cli_restore(tmp_path, comfy_env, capsys):
    from aware_restore.cli import main

    out = tmp_path / "restored.png"
    code = main(["--models-dir", str(comfy_env.models_dir), "restore", str(comfy_env.input_dir / "example.png"),
                 "--out", str(out), "--daclip", str(comfy_env.models_dir / "daclip" / TINY_DACLIP), "--seed", "3"])
    assert code == 0 and str(out) in capsys.readouterr().out
    assert Image.open(out).size == Image.open(comfy_env.input_dir / "example.png").size
