"""The pack as ComfyUI and as Python see it: import paths, registration, node metadata, adapter, CLI."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import comfy.model_management as mm
import comfy.utils
import folder_paths
from conftest import ROOT, WORKFLOWS

EXPECTED_NODES = {
    "ARColorFix", "ARDownloadModel",
    "DACLIPLoader", "DACLIPEncode", "DACLIPClassifyDegradation", "DACLIPDegradationFromText",
    "IRSDELoader", "DACLIPRestore",
    "DAPELoader", "DAPETagger",
    "SeeSRLoader", "SeeSRPrompt", "SeeSRLREmbedding", "SeeSRSampler", "SeeSRUpscale",
    "SSENLoader", "SSENReferenceSR", "SSENOffsetMap",
}


def _load_like_comfyui(folder: Path):
    """What ComfyUI's load_custom_node does: module named after the folder, loaded from its __init__.py."""
    name = folder.name
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def test_import_from_a_differently_named_custom_nodes_folder(tmp_path):
    folder = tmp_path / "custom_nodes" / "ComfyUI-Aware Restore-v9"
    shutil.copytree(ROOT, folder, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "tests",
                                                                 "benchmarks", "*.egg-info"))
    try:
        module = _load_like_comfyui(folder)
        ext = asyncio.run(module.comfy_entrypoint())
        nodes = asyncio.run(ext.get_node_list())
        ids = {n.GET_SCHEMA().node_id for n in nodes}
        assert "ARColorFix" in ids
        assert all(n.__module__.startswith("ComfyUI-Aware Restore-v9.nodes.") for n in nodes)
    finally:
        for key in [k for k in sys.modules if k.startswith("ComfyUI-Aware Restore-v9")]:
            del sys.modules[key]


def test_library_import_has_no_comfyui_and_no_side_effects():
    code = ("import sys, aware_restore, aware_restore.core.checkpoint, aware_restore.core.image, "
            "aware_restore.core.tiling, aware_restore.core.colorfix, aware_restore.cli;"
            "bad=[m for m in sys.modules if m.split('.')[0] in ('comfy','comfy_api','folder_paths')];"
            "assert not bad, bad; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    for fam in ("daclip", "irsde", "ram", "seesr", "ssen"):
        if (ROOT / "core" / fam / "__init__.py").exists():
            code = f"import sys, aware_restore.core.{fam}; assert 'comfy' not in sys.modules and 'folder_paths' not in sys.modules"
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
            assert out.returncode == 0, (fam, out.stderr)


def test_every_expected_node_is_registered_with_metadata(comfy_env):
    ids = set(comfy_env.node_classes)
    present_families = ids & EXPECTED_NODES
    assert "ARColorFix" in present_families
    missing = EXPECTED_NODES - ids
    # every family whose node module exists must register all its nodes
    for fam_file, fam_nodes in (("daclip", {"DACLIPLoader", "DACLIPEncode", "DACLIPClassifyDegradation",
                                            "DACLIPDegradationFromText"}),
                                ("irsde", {"IRSDELoader", "DACLIPRestore"}),
                                ("dape", {"DAPELoader", "DAPETagger"}),
                                ("seesr", {"SeeSRLoader", "SeeSRPrompt", "SeeSRLREmbedding", "SeeSRSampler",
                                           "SeeSRUpscale"}),
                                ("ssen", {"SSENLoader", "SSENReferenceSR", "SSENOffsetMap"})):
        if (ROOT / "nodes" / f"{fam_file}.py").exists():
            assert not (fam_nodes & missing), f"{fam_file}: {fam_nodes & missing} not registered"
    for node_id, cls in comfy_env.node_classes.items():
        s = cls.GET_SCHEMA()
        assert s.display_name and s.description, node_id
        assert s.category.startswith("AwareRestore/"), node_id
        for i in s.inputs:
            assert i.tooltip, f"{node_id}.{i.id} has no tooltip"
        for o in s.outputs:
            assert o.tooltip, f"{node_id} output {o.display_name or o.io_type} has no tooltip"


def test_model_folders_are_appended_after_user_paths(comfy_env, tmp_path):
    from aware_restore.nodes import common

    extra = str(tmp_path / "shared_models" / "daclip")
    before = folder_paths.folder_names_and_paths.pop("daclip")
    try:
        folder_paths.add_model_folder_path("daclip", extra)  # as extra_model_paths.yaml would, at startup
        common.register_model_folders()
        paths, exts = folder_paths.folder_names_and_paths["daclip"]
        assert paths[0] == extra and paths[1].endswith("models/daclip") and ".safetensors" in exts
    finally:
        folder_paths.folder_names_and_paths["daclip"] = before


def test_missing_model_error_names_model_and_folders(comfy_env):
    from aware_restore.nodes import common

    with pytest.raises(FileNotFoundError) as err:
        common.resolve_file("daclip", "nope.pt", "DA-CLIP")
    assert "DA-CLIP" in str(err.value) and str(comfy_env.models_dir / "daclip") in str(err.value)


def test_adapter_wraps_loads_and_reports_progress(comfy_env):
    from aware_restore.nodes import common

    from aware_restore.core.arch import ModelDescriptor

    module = torch.nn.Linear(3, 3)
    payload = common.wrap(ModelDescriptor(module, "test", "a test model", None), "test.safetensors")
    other = common.wrap(ModelDescriptor(torch.nn.Linear(2, 2), "test", "another", None), "other.safetensors")
    mm.loaded_calls.clear()
    assert common.load_models((payload, 123), (other, 7)) == [module, other.patcher.model]
    assert mm.loaded_calls[-1]["models"] == [payload.patcher, other.patcher]  # one call: neither evicts the other
    assert mm.loaded_calls[-1]["memory_required"] == 130
    assert common.compute_dtype() == torch.float32  # CPU
    comfy.utils.updates.clear()
    progress = common.progress_callback(4)
    progress(1, 4)
    progress(4, 4)
    assert comfy.utils.updates == [(1, 4), (4, 4)]
    mm.interrupt_current_processing(True)
    with pytest.raises(mm.InterruptProcessingException):
        progress(2, 4)


def test_colorfix_node_batch_alpha_and_reference_sizes(comfy_env):
    from aware_restore.nodes.utils import ARColorFix

    img = torch.rand(3, 20, 24, 4)
    ref = torch.rand(1, 41, 13, 3)
    (out,) = ARColorFix.execute(img, ref, "adain").args
    assert out.shape == (3, 20, 24, 4) and torch.equal(out[..., 3], img[..., 3])
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    with pytest.raises(ValueError, match="reference batch has 2"):
        ARColorFix.execute(img, torch.rand(2, 8, 8, 3), "wavelet")


def test_every_ui_workflow_has_an_api_twin_that_matches(comfy_env):
    from core_nodes import core_nodes
    from workflow_tools import object_info, to_api

    info = object_info([*core_nodes(), *comfy_env.node_classes.values()])
    ui_files = sorted(WORKFLOWS.glob("*.json"))
    assert ui_files
    for ui_file in ui_files:
        twin = WORKFLOWS / "api" / ui_file.name
        assert twin.exists(), f"{ui_file.name} has no API twin"
        ui = json.loads(ui_file.read_text())
        if not {n["type"] for n in ui["nodes"]} <= set(info):
            pytest.fail(f"{ui_file.name} uses node types that are not registered")
        assert to_api(ui, info) == json.loads(twin.read_text()), ui_file.name


@pytest.mark.parametrize("name", sorted(p.name for p in (WORKFLOWS / "api").glob("*.json")))
def test_every_api_workflow_executes(comfy_env, name):
    """Every shipped API workflow validates and runs with the tiny models. Diffusion step counts are capped at 2
    to keep CI fast (the family tests run their workflows with the official settings where that is cheap)."""
    prompt = json.loads((WORKFLOWS / "api" / name).read_text())
    for node in prompt.values():
        if isinstance(node["inputs"].get("steps"), int) and node["class_type"].startswith("SeeSR"):
            node["inputs"]["steps"] = min(node["inputs"]["steps"], 2)
    res = comfy_env.run(prompt)
    assert res.ui, f"{name} produced no output"
    for node_id, ui in res.ui.items():
        for img in ui.get("images", []):
            if img.get("type") == "output":
                assert (comfy_env.output_dir / img["subfolder"] / img["filename"]).exists(), (name, node_id)


def test_runner_reports_bad_links_with_node_id(comfy_env):
    from runner import WorkflowError

    bad = json.loads((WORKFLOWS / "api" / "colorfix.json").read_text())
    bad["3"]["inputs"]["image"] = ["1", 1]  # MASK into IMAGE
    with pytest.raises(WorkflowError, match=r"node 3 \(ARColorFix\).*expects IMAGE.*MASK"):
        comfy_env.run(bad)
    bad["3"]["inputs"]["image"] = ["1", 0]
    bad["3"]["inputs"]["method"] = "median"
    with pytest.raises(WorkflowError, match="not in the list"):
        comfy_env.run(bad)


def test_cli_info_lists_tiny_models(comfy_env):
    out = subprocess.run([sys.executable, "-m", "aware_restore", "--models-dir", str(comfy_env.models_dir),
                          "info", "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert {r["folder"] for r in report["roots"]} == {"daclip", "irsde", "dape", "seesr", "ssen"}
    families = {f["family"] for f in report["files"]}
    expected = {"daclip": "daclip", "irsde": "irsde", "ram": "ram", "ssen": "ssen"}
    for fam in comfy_env.families:
        if fam in expected:
            assert expected[fam] in families, (fam, families)


def test_cli_download_offline_names_file_url_and_folder(tmp_path, monkeypatch):
    from aware_restore.core import download

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(download.DownloadError) as err:
        download.fetch("daclip_ViT-B-32.pt", tmp_path)
    msg = str(err.value)
    assert "daclip_ViT-B-32.pt" in msg and "huggingface.co" in msg and str(tmp_path / "daclip") in msg
    with pytest.raises(download.DownloadError, match="drive.google.com"):
        download.fetch("DAPE.pth", tmp_path)


def test_download_node_offline_error_and_existing_file(comfy_env, monkeypatch, tmp_path):
    from aware_restore.nodes.utils import ARDownloadModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = tmp_path / "models" / "irsde"
    monkeypatch.setitem(folder_paths.folder_names_and_paths, "irsde", ([str(folder)], {".pth"}))
    with pytest.raises(Exception, match="universal-ir.pth.*huggingface.co.*models/irsde"):
        ARDownloadModel.execute("universal-ir.pth")
    folder.mkdir(parents=True)
    (folder / "universal-ir.pth").touch()
    out = ARDownloadModel.execute("universal-ir.pth")
    assert out.args[0] == str(folder / "universal-ir.pth") and out.ui["text"] == (out.args[0],)


@pytest.mark.skipif(shutil.which("comfy") is None and not (Path(sys.executable).parent / "comfy").exists(),
                    reason="comfy-cli not installed")
def test_comfy_node_validate_passes():
    comfy = shutil.which("comfy") or str(Path(sys.executable).parent / "comfy")
    out = subprocess.run([comfy, "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "passed" in out.stdout + out.stderr, out.stdout + out.stderr
