"""Test set-up: the ComfyUI test double goes first on sys.path (tests only), and a session-wide ComfyUI-like
environment (models tree from the tiny-model kit, input images, the pack's nodes, a workflow runner)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
sys.path.insert(0, str(TESTS / "comfy_double"))  # tests only: `import folder_paths`, `comfy`, `comfy_api`

import comfy.model_management  # noqa: E402  (the double)
import folder_paths  # noqa: E402  (the double)

FIXTURES = TESTS / "fixtures"
WORKFLOWS = ROOT / "workflows"


def make_test_image(h: int, w: int, seed: int = 0, channels: int = 3) -> np.ndarray:
    """A smooth colour pattern with edges and mild noise, uint8 HxWxC."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = [0.5 + 0.4 * np.sin(xx / (5 + 3 * c) + yy / (7 + 2 * c) + seed) for c in range(3)]
    img = np.stack(base, -1)
    img[h // 4: h // 2, w // 3: 2 * w // 3] = [0.9, 0.2, 0.1]
    img += rng.normal(0, 0.02, img.shape).astype(np.float32)
    img = (np.clip(img, 0, 1) * 255).astype(np.uint8)
    if channels == 4:
        alpha = np.full((h, w, 1), 255, np.uint8)
        alpha[:, : w // 4] = 0
        img = np.concatenate([img, alpha], -1)
    return img


def random_image(b: int, h: int, w: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    """A seeded ComfyUI IMAGE batch ``[B,H,W,C]`` of uniform noise."""
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


INPUT_IMAGES = {
    "example.png": (48, 64, 1, 3),
    "reference.png": (96, 128, 2, 3),
    "example_rgba.png": (40, 56, 3, 4),
}


@dataclass
class ComfyEnv:
    base: Path
    models_dir: Path
    input_dir: Path
    output_dir: Path
    families: list[str]
    node_classes: dict
    runner: object

    def run(self, workflow):
        from runner import load_prompt

        return self.runner.run(load_prompt(workflow))


def load_pack_nodes():
    """The pack's nodes through its V3 entry point, as ComfyUI gets them."""
    import aware_restore

    ext = asyncio.run(aware_restore.comfy_entrypoint())
    asyncio.run(ext.on_load())
    return asyncio.run(ext.get_node_list())


@pytest.fixture(scope="session")
def comfy_env(tmp_path_factory) -> ComfyEnv:
    from core_nodes import core_nodes
    from kit import build_models_tree
    from runner import Runner

    base = tmp_path_factory.mktemp("comfyui")
    folder_paths.set_base(str(base))
    models = Path(folder_paths.models_dir)
    families = build_models_tree(models)
    inp = Path(folder_paths.get_input_directory())
    inp.mkdir(parents=True, exist_ok=True)
    Path(folder_paths.get_output_directory()).mkdir(parents=True, exist_ok=True)
    for name, (h, w, seed, c) in INPUT_IMAGES.items():
        Image.fromarray(make_test_image(h, w, seed, c)).save(inp / name)
    pack = load_pack_nodes()
    runner = Runner([*core_nodes(), *pack])
    return ComfyEnv(base, models, inp, Path(folder_paths.get_output_directory()), families,
                    {c.GET_SCHEMA().node_id: c for c in pack}, runner)


@pytest.fixture()
def nodes(comfy_env, request) -> dict:
    """The node classes named by the test module's ``IDS``."""
    return {i: comfy_env.node_classes[i] for i in request.module.IDS}


@pytest.fixture(autouse=True)
def _reset_double_state():
    comfy.model_management.interrupt_current_processing(False)
    yield
    comfy.model_management.interrupt_current_processing(False)
