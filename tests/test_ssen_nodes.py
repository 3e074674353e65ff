"""SSEN nodes through the ComfyUI double: loader (shipped default + models/ssen files), reference SR (batches,
references of any size, alpha, tiling, interrupt, bad input), offset map, the example workflow, and the CLI."""

from __future__ import annotations

import comfy.model_management as mm
import numpy as np
import pytest
import torch
from aware_restore.core.checkpoint import save_safetensors
from aware_restore.core.registry import WrongModelError
from conftest import WORKFLOWS
from PIL import Image

IDS = ("SSENLoader", "SSENReferenceSR", "SSENOffsetMap")


def _image(b: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, h, w, c, generator=g)


def _matching_ref(img: torch.Tensor, seed: int) -> torch.Tensor:
    """A 4× reference that agrees with ``img`` in colour (so SSEN's similarity gate lets it through) but carries
    its own fine texture."""
    g = torch.Generator().manual_seed(seed)
    up = torch.nn.functional.interpolate(img.permute(0, 3, 1, 2), scale_factor=4, mode="nearest")
    return (up + 0.05 * torch.randn(up.shape, generator=g)).clamp(0, 1).permute(0, 2, 3, 1)


@pytest.fixture()
def nodes(comfy_env):
    return {i: comfy_env.node_classes[i] for i in IDS}


@pytest.fixture()
def tiny(nodes):
    return nodes["SSENLoader"].execute("ssen_tiny.safetensors").args[0]


def test_schemas_have_tooltips_and_shipped_default_first(nodes):
    for cls in nodes.values():
        schema = cls.GET_SCHEMA()
        assert schema.category.startswith("AwareRestore/SSEN")
        for port in [*schema.inputs, *schema.outputs]:
            assert port.tooltip, f"{schema.node_id}.{port.id} has no tooltip"
    combo = nodes["SSENLoader"].GET_SCHEMA().inputs[0]
    assert combo.options[0].endswith("(shipped)") and combo.default == combo.options[0]
    assert "ssen_tiny.safetensors" in combo.options


def test_reference_sr_batches_references_and_alpha(nodes, tiny):
    sr = nodes["SSENReferenceSR"]
    img = _image(2, 12, 16)
    out = sr.execute(tiny, img, None, 0, 16).args[0]
    assert out.shape == (2, 48, 64, 3) and 0 <= float(out.min()) and float(out.max()) <= 1
    one_ref = sr.execute(tiny, img, _matching_ref(img[:1], 1), 0, 16).args[0]
    per_image = sr.execute(tiny, img, torch.cat([_matching_ref(img[:1], 1), _matching_ref(img[1:], 2)]), 0,
                           16).args[0]
    assert torch.allclose(one_ref[0], per_image[0], atol=1e-5)
    assert not torch.allclose(one_ref[1], per_image[1], atol=1e-4)  # the second reference is used
    assert not torch.allclose(out, one_ref, atol=1e-4)  # a reference differs from self-similarity
    rgba = sr.execute(tiny, _image(1, 10, 10, c=4), _image(1, 20, 20, c=4), 0, 16).args[0]
    assert rgba.shape == (1, 40, 40, 4)
    with pytest.raises(ValueError, match="one per image"):
        sr.execute(tiny, img, _image(3, 8, 8), 0, 16)


def test_reference_sr_tiles_reports_progress_and_interrupts(nodes, tiny):
    sr = nodes["SSENReferenceSR"]
    img = _image(1, 40, 40)
    whole = sr.execute(tiny, img, None, 0, 16).args[0]
    single = sr.execute(tiny, img, None, 64, 16).args[0]
    assert torch.equal(whole, single)  # image within one tile: exactly the untiled result
    tiled = sr.execute(tiny, img, None, 24, 8).args[0]
    assert tiled.shape == whole.shape
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        sr.execute(tiny, img, None, 24, 8)


def test_bad_inputs_give_clear_errors(nodes, tiny, comfy_env):
    sr = nodes["SSENReferenceSR"]
    with pytest.raises(TypeError, match="Load SSEN Model"):
        sr.execute("not a model", _image(1, 8, 8), None, 0, 16)
    with pytest.raises(ValueError, match="at least"):
        sr.execute(tiny, _image(1, 2, 8), None, 0, 16)
    bad = comfy_env.models_dir / "ssen" / "not_ssen.safetensors"
    save_safetensors({"conv_in.weight": torch.zeros(2), "down_blocks.0.w": torch.zeros(2)}, bad)
    try:
        with pytest.raises(WrongModelError, match="models/ssen"):
            nodes["SSENLoader"].execute("not_ssen.safetensors")
    finally:
        bad.unlink()


def test_offset_map_outputs(nodes, tiny):
    points, heat, scale = nodes["SSENOffsetMap"].execute(tiny, _image(2, 16, 16), _image(1, 40, 40, seed=3), 4).args
    assert points.shape == heat.shape == scale.shape == (2, 64, 64, 3)
    assert float(points.max()) > 0.9  # the undeformed-position markers are white


def test_workflow_runs_with_shipped_model(comfy_env):
    res = comfy_env.run(WORKFLOWS / "api" / "ssen_reference_sr.json")
    saved = res.ui["5"]["images"]
    out = np.asarray(Image.open(comfy_env.output_dir / "AwareRestore" / saved[0]["filename"]))
    src = np.asarray(Image.open(comfy_env.input_dir / "example.png"))
    assert out.shape == (4 * src.shape[0], 4 * src.shape[1], 3)
    assert res.outputs["6"][0].shape == (1, out.shape[0], out.shape[1], 3)
    assert "7" in res.ui


def test_cli_ssen_with_shipped_model(tmp_path, comfy_env, capsys):
    from aware_restore.cli import main

    out = tmp_path / "sr.png"
    code = main(["ssen", str(comfy_env.input_dir / "example.png"), "--ref",
                 str(comfy_env.input_dir / "reference.png"), "--out", str(out), "--tile", "32",
                 "--offsets", str(tmp_path / "offsets.png")])
    assert code == 0 and str(out) in capsys.readouterr().out
    src = Image.open(comfy_env.input_dir / "example.png")
    assert Image.open(out).size == (4 * src.size[0], 4 * src.size[1])
    assert Image.open(tmp_path / "offsets.png").size == Image.open(out).size
    assert main(["ssen", str(tmp_path / "missing.png"), "--out", str(tmp_path / "x.png")]) == 1
