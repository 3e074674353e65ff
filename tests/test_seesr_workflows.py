"""The SeeSR example workflows (API twins) run through the runner on tiny models (2 steps, small process size)."""

from __future__ import annotations

import json

import numpy as np
from conftest import WORKFLOWS
from PIL import Image


def _load(name: str, **overrides) -> dict:
    prompt = json.loads((WORKFLOWS / "api" / f"{name}.json").read_text())
    for node in prompt.values():
        for key, value in overrides.items():
            if key in node["inputs"] and not isinstance(node["inputs"][key], list):
                node["inputs"][key] = value
    return prompt


def _saved(comfy_env, res, node_id: str) -> np.ndarray:
    saved = res.ui[node_id]["images"]
    assert len(saved) == 1
    return np.asarray(Image.open(comfy_env.output_dir / "AwareRestore" / saved[0]["filename"]))


FAST = {"steps": 1, "process_size": 64, "seed": 5}


def test_seesr_workflows_run_and_agree(comfy_env):
    # example.png is 64x48: x4 -> 256x192 (no pre-scale at process size 64), latent 24x32
    simple = _saved(comfy_env, comfy_env.run(_load("seesr_x4_simple", **FAST)), "6")
    assert simple.shape == (192, 256, 3)
    modular = _saved(comfy_env, comfy_env.run(_load("seesr_x4", **FAST)), "13")
    assert modular.shape == (192, 256, 3)
    # same seed and settings: the one-node chain and the modular graph give the same image
    assert np.abs(simple.astype(int) - modular.astype(int)).max() <= 1
    src = np.asarray(Image.open(comfy_env.input_dir / "example.png").resize((256, 192), Image.BICUBIC))
    assert np.abs(simple.astype(float).mean(axis=(0, 1)) - src.astype(float).mean(axis=(0, 1))).max() < 8  # adain
