"""Safe checkpoint loading, unwrapping, family detection and conversion."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from aware_restore.cli import main as cli_main
from aware_restore.core.checkpoint import (CheckpointError, load_state_dict, meta_state_dict_from_key_list,
                                           read_metadata, save_safetensors)
from aware_restore.core.registry import WrongModelError, detect_family, require_family


def _irsde_like() -> dict[str, torch.Tensor]:
    return {"init_conv.weight": torch.randn(4, 6, 7, 7), "final_conv.weight": torch.randn(3, 4, 3, 3),
            "downs.0.0.block1.proj.weight": torch.randn(4, 4, 3, 3)}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil(marker)}, path)
    with pytest.raises(CheckpointError, match="allow-list"):
        load_state_dict(path)
    assert not marker.exists()
    legacy = tmp_path / "evil_legacy.pth"  # old (non-zip) pickle format takes the same safe path
    torch.save({"payload": _Evil(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError):
        load_state_dict(legacy)
    assert not marker.exists()


def test_numpy_scalars_in_training_checkpoint_are_allowed(tmp_path):
    sd = OrderedDict((k, v.half()) for k, v in _irsde_like().items())
    ckpt = {"epoch": 3, "state_dict": sd,
            "optimizer": {"param_groups": [{"lr": np.float64(2.9e-5), "betas": (0.9, 0.98)}], "state": {}}}
    path = tmp_path / "train.pt"
    torch.save(ckpt, path)
    with pytest.raises(pickle.UnpicklingError):  # plain weights_only load needs the allow-list
        torch.load(path, weights_only=True)
    out = load_state_dict(path)
    assert set(out) == set(sd) and out["init_conv.weight"].dtype == torch.float16


@pytest.mark.parametrize("wrapper", ["state_dict", "model", "params_ema", "params"])
def test_unwraps_wrappers_and_module_prefix(tmp_path, wrapper):
    sd = {f"module.{k}": v for k, v in _irsde_like().items()}
    path = tmp_path / "w.pth"
    torch.save({wrapper: sd, "iter": 5}, path)
    out = load_state_dict(path)
    assert set(out) == set(_irsde_like())


def test_safetensors_roundtrip_with_metadata(tmp_path):
    sd = _irsde_like()
    path = save_safetensors(sd, tmp_path / "x.safetensors", metadata={"config": {"nf": 4}}, dtype=torch.float16)
    out = load_state_dict(path)
    assert out["init_conv.weight"].dtype == torch.float16
    torch.testing.assert_close(out["final_conv.weight"].float(), sd["final_conv.weight"].half().float())
    assert read_metadata(path)["config"] == '{"nf": 4}'


def test_garbage_and_missing_files_raise_clear_errors(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="safetensors"):
        load_state_dict(bad)
    with pytest.raises(CheckpointError, match="not found"):
        load_state_dict(tmp_path / "missing.pth")
    torch.save({"foo": 1}, tmp_path / "nodict.pth")
    with pytest.raises(CheckpointError, match="no tensor state dict"):
        load_state_dict(tmp_path / "nodict.pth")


def test_family_detection_and_wrong_family_error():
    assert detect_family(_irsde_like()) == "irsde"
    assert detect_family({"visual_control.conv1.weight": torch.zeros(1), "clip.logit_scale": torch.zeros(())}) \
        == "daclip"
    assert detect_family({"a.lora_A": torch.zeros(1), "a.lora_B": torch.zeros(1)}) == "dape"
    sd_ckpt = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(1)}
    with pytest.raises(WrongModelError) as err:
        require_family(sd_ckpt, "daclip", source="sd21.safetensors")
    msg = str(err.value)
    assert "DA-CLIP" in msg and "Stable Diffusion" in msg and "models/daclip" in msg and "sd21.safetensors" in msg


def test_meta_state_dict_from_key_list(tmp_path):
    lst = tmp_path / "keys.txt"
    lst.write_text("a.weight\t[3, 4]\nb\t[]\n")
    sd = meta_state_dict_from_key_list(lst)
    assert sd["a.weight"].shape == (3, 4) and sd["a.weight"].is_meta and sd["b"].shape == ()


def test_cli_convert_keeps_inference_weights(tmp_path, capsys):
    sd = {"label_embed": torch.randn(5, 8), "visual_encoder.patch_embed.proj.weight": torch.randn(4, 3, 4, 4),
          "tag_encoder.embeddings.LayerNorm.weight": torch.randn(8),
          "text_decoder.cls.predictions.bias": torch.randn(10)}
    src = tmp_path / "ram.pth"
    torch.save({"model": sd}, src)
    dst = tmp_path / "ram.safetensors"
    assert cli_main(["convert", str(src), str(dst)]) == 0
    out = load_state_dict(dst)
    assert set(out) == {"label_embed", "visual_encoder.patch_embed.proj.weight"}
    assert out["label_embed"].dtype == torch.float16
    assert read_metadata(dst)["family"] == "ram"
    unknown = tmp_path / "unknown.pth"
    torch.save({"x": torch.zeros(1)}, unknown)
    with pytest.raises(SystemExit, match="not a model this pack knows"):
        cli_main(["convert", str(unknown), str(tmp_path / "u.safetensors")])
