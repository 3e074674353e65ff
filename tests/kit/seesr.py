"""Tiny SeeSR files for node/workflow tests in the official layout: models/seesr/seesr/{unet,controlnet}/
(config.json + diffusion_pytorch_model.safetensors, the parity fixtures), plus the tiny SD2 stand-in checkpoint
models/checkpoints/sd2_tiny_double.safetensors read by the test double's CheckpointLoaderSimple."""

from __future__ import annotations

import shutil
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "seesr"
SEESR_NAME = "seesr"
SD2_NAME = "512-base-ema.safetensors"  # the SD-2-base single-file name; here a tiny stand-in for the double


def write(models_root: Path) -> None:
    root = Path(models_root)
    for part in ("unet", "controlnet"):
        dst = root / "seesr" / SEESR_NAME / part
        dst.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", "diffusion_pytorch_model.safetensors"):
            shutil.copyfile(FIXTURES / part / name, dst / name)
    try:
        import sd_nodes  # the double's SD nodes (tests/comfy_double on sys.path)
    except ModuleNotFoundError:
        return
    sd_nodes.write_checkpoint(root / "checkpoints" / SD2_NAME)
