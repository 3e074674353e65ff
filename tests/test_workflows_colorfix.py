"""The ARColorFix example workflow runs through the runner and saves the colour-fixed image."""

from __future__ import annotations

import numpy as np
from PIL import Image

from conftest import WORKFLOWS


def test_colorfix_workflow_runs(comfy_env):
    res = comfy_env.run(WORKFLOWS / "api" / "colorfix.json")
    saved = res.ui["4"]["images"]
    assert len(saved) == 1
    out = np.asarray(Image.open(comfy_env.output_dir / "AwareRestore" / saved[0]["filename"]))
    src = np.asarray(Image.open(comfy_env.input_dir / "example.png"))
    assert out.shape == src.shape
    assert not np.array_equal(out, src)  # colours moved towards the reference
