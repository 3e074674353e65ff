"""`aware-restore seesr` end to end on tiny models: SeeSR fixtures, tiny RAM/DAPE, a tiny diffusers SD-2 folder."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from kit.seesr import write_tiny_sd2
from PIL import Image

FIX = Path(__file__).parent / "fixtures"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("seesr_cli")
    for part in ("unet", "controlnet"):
        shutil.copytree(FIX / "seesr" / part, root / "models" / "seesr" / "seesr" / part)
    (root / "models" / "dape").mkdir(parents=True)
    shutil.copyfile(FIX / "ram" / "ram_tiny.pth", root / "models" / "dape" / "ram_swin_large_14m.pth")
    shutil.copyfile(FIX / "ram" / "dape_tiny.pth", root / "models" / "dape" / "DAPE.pth")
    write_tiny_sd2(root / "sd2")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(root / "lr.png")
    return root


def test_cli_seesr(models, capsys):
    from aware_restore.cli import main

    out = models / "sr.png"
    rc = main(["--models-dir", str(models / "models"), "seesr", str(models / "lr.png"), "--out", str(out),
               "--sd2", str(models / "sd2"), "--steps", "1", "--process-size", "64", "--seed", "3"])
    assert rc == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert Image.open(out).size == (128, 96)


def _rc(argv):
    from aware_restore.cli import main

    try:
        return main(argv)
    except SystemExit as exc:
        return exc.code


def test_cli_errors(models, tmp_path, caplog):
    rc = _rc(["--models-dir", str(tmp_path), "seesr", str(models / "lr.png"), "--out", str(tmp_path / "x.png"),
              "--sd2", str(models / "sd2")])
    assert rc != 0 and "unet/ + controlnet/" in (str(rc) + caplog.text)
    caplog.clear()
    rc = _rc(["--models-dir", str(models / "models"), "seesr", str(models / "lr.png"), "--out",
              str(tmp_path / "x.png"), "--sd2", str(tmp_path)])
    assert rc != 0 and "needs vae/ and text_encoder/" in caplog.text
    assert not (tmp_path / "x.png").exists()


def test_sd2_single_file_conversion_on_meta():
    """The SD-2 single-file layout (VAE + OpenCLIP text tower, real key names and shapes) converts strictly into
    the models built from the shipped configs; the 24th text block is dropped (penultimate layer)."""
    from aware_restore.core.checkpoint import meta_state_dict_from_key_list
    from aware_restore.core.seesr.sd2 import sd2_from_checkpoint

    ckpt = meta_state_dict_from_key_list(FIX / "seesr" / "sd2_single_file_keys.txt")
    vae, text = sd2_from_checkpoint(ckpt)
    assert text.config.num_hidden_layers == 23 and text.config.hidden_size == 1024
    assert next(vae.parameters()).is_meta and next(text.parameters()).is_meta
    pos = dict(text.named_buffers())
    assert next(v for k, v in pos.items() if k.endswith("position_ids")).tolist()[0][:3] == [0, 1, 2]
    assert vae.encoder.mid_block.attentions[0].to_k.weight.shape == (512, 512)
    ckpt.pop("first_stage_model.encoder.conv_in.weight")
    with pytest.raises((ValueError, RuntimeError)):
        sd2_from_checkpoint(ckpt)
    with pytest.raises(ValueError, match="not an SD-2 single-file"):
        sd2_from_checkpoint({"model.diffusion_model.x": torch.zeros(1)})
