"""Plain-torch models (RAM/DAPE, DA-CLIP, IR-SDE, SSEN) are loaded fully under ComfyUI's memory manager.

Under VRAM pressure ComfyUI loads a model partially: layers that do not fit stay on the offload device and only
``comfy.ops`` layers cast their weights over at run time, so a plain ``torch.nn`` forward would mix devices.
``nodes.common.load_models`` therefore asks for ``force_full_load``. The double simulates the partial load
(``comfy.model_management.LOW_VRAM``: nothing fits) and raises the device mismatch a plain layer left behind
would meet. The same check against a real ComfyUI's ``comfy.model_management`` is ``tests/lowvram_probe.py``
(run by the last test for each of ``COMFYUI_DIR`` / ``COMFYUI_NEW_DIR`` that is set).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import comfy.model_management as mm
import pytest
from conftest import ROOT, WORKFLOWS
from runner import WorkflowError

FAMILIES = {  # workflow -> the loader nodes it runs
    "daclip_restore": {"DACLIPLoader", "IRSDELoader"},  # DA-CLIP and IR-SDE
    "dape_tagging": {"DAPELoader"},  # RAM + DAPE
    "ssen_reference_sr": {"SSENLoader"},
}


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_runs_when_nothing_fits_on_the_device(comfy_env, monkeypatch, name):
    import json

    prompt = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    assert FAMILIES[name] <= {v["class_type"] for v in prompt.values()}
    monkeypatch.setattr(mm, "LOW_VRAM", 1)  # 1 byte of room: a partial load would leave every layer behind
    mm.loaded_calls.clear()
    res = comfy_env.run(prompt)
    assert res.outputs and mm.loaded_calls
    assert all(call["force_full_load"] for call in mm.loaded_calls)


def test_the_double_really_simulates_a_partial_load(comfy_env, monkeypatch):
    """Without force_full_load the same workflow fails with the device mismatch (the case this guards)."""
    from aware_restore.nodes import common

    monkeypatch.setattr(mm, "LOW_VRAM", 1)
    monkeypatch.setattr(common, "_accepts", lambda fn, name: False)  # an old ComfyUI's signature
    with pytest.raises(WorkflowError, match="same device"):
        comfy_env.run(WORKFLOWS / "api" / "dape_tagging.json")
    monkeypatch.undo()
    comfy_env.run(WORKFLOWS / "api" / "dape_tagging.json")  # the next full load removes the simulation


def test_old_comfyui_without_force_full_load_still_loads(comfy_env, monkeypatch):
    import torch
    from aware_restore.core.arch import ModelDescriptor
    from aware_restore.nodes import common

    calls = []

    def old_load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None):
        calls.append((list(models), memory_required))

    payload = common.wrap(ModelDescriptor(torch.nn.Linear(2, 2), "test", "a test model", None), "t.safetensors")
    assert common._accepts(mm.load_models_gpu, "force_full_load")
    monkeypatch.setattr(mm, "load_models_gpu", old_load_models_gpu)
    assert common.load_models((payload, 5)) == [payload.patcher.model]  # no TypeError on the old signature
    assert calls == [([payload.patcher], 5)]


COMFYUIS = {name: os.environ[name] for name in ("COMFYUI_DIR", "COMFYUI_NEW_DIR") if os.environ.get(name)}


@pytest.mark.integration
@pytest.mark.skipif(not COMFYUIS, reason="set COMFYUI_DIR / COMFYUI_NEW_DIR to ComfyUI checkouts (with venvs)")
@pytest.mark.parametrize("which", sorted(COMFYUIS) or ["COMFYUI_DIR"])
def test_real_comfyui_loads_every_family_fully_under_low_vram(tmp_path, which):
    comfy_dir = COMFYUIS[which]
    python = Path(comfy_dir) / ".venv" / "bin" / "python"
    python = str(python) if python.exists() else sys.executable
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), comfy_dir,
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([python, str(ROOT / "tests" / "lowvram_probe.py"), str(tmp_path)], cwd=comfy_dir,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "ALL FULLY LOADED" in proc.stdout
