"""Safe checkpoint loading, unwrapping, family detection and conversion."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

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


def test_allow_list_on_older_torch(tmp_path, monkeypatch):
    """safe_globals appeared in torch 2.5 and reads (callable, name) aliases from 2.6: older torch still loads
    plain weights, and a file that needs the extra globals gets the clear error instead of a crash."""
    import aware_restore.core.checkpoint as ckpt_mod

    seen = []
    real = torch.serialization.safe_globals
    monkeypatch.setattr(torch.serialization, "safe_globals", lambda allowed: seen.append(allowed) or real(allowed))
    path = tmp_path / "plain.pth"
    torch.save(_irsde_like(), path)
    for version, aliases in (("2.13.0+cpu", True), ("2.6.0", True), ("2.5.1+cu124", False)):
        monkeypatch.setattr(torch, "__version__", version)
        assert set(load_state_dict(path)) == set(_irsde_like())
        assert any(isinstance(g, tuple) for g in seen[-1]) is aliases, version
    monkeypatch.delattr(torch.serialization, "safe_globals")  # torch 2.4
    assert ckpt_mod._torch_version() == (2, 5)
    assert set(load_state_dict(path)) == set(_irsde_like())
    numpy_ckpt = tmp_path / "train.pt"
    torch.save({"state_dict": _irsde_like(), "lr": np.float64(1e-4)}, numpy_ckpt)
    with pytest.raises(CheckpointError, match="allow-list"):
        load_state_dict(numpy_ckpt)


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


# --------------------------------------------------------------------------------- unreadable files (issue 12, item 4)
def _torch_bytes(legacy: bool = False) -> bytes:
    import io

    buf = io.BytesIO()
    torch.save({"w": torch.arange(4096, dtype=torch.float32)}, buf, _use_new_zipfile_serialization=not legacy)
    return buf.getvalue()


def _safetensors_bytes(tmp_path) -> bytes:
    path = save_safetensors({"w": torch.arange(4096, dtype=torch.float32)}, tmp_path / "src.safetensors")
    return path.read_bytes()


BROKEN = {
    # name: (file content (bytes or a callable of tmp_path), kind, words the message must contain)
    "empty.pth": (b"", "empty", ["empty (0 bytes)", "download"]),
    "lfs.pth": (b"version https://git-lfs.github.com/spec/v1\noid sha256:0123\nsize 351712\n", "text",
                ["Git LFS pointer", "git lfs pull"]),
    "page.safetensors": (b"<!DOCTYPE html><html><body>Google Drive - Virus scan warning</body></html>", "text",
                         ["web page (HTML)", "Download the file itself"]),
    "notes.pt": (b"these are my notes about the model\n", "text", ["text file", "these are my notes"]),
    "cut.pth": (lambda tmp: _torch_bytes()[:3000], "truncated", ["zip archive", "cut off", "download"]),
    "cut_legacy.pth": (lambda tmp: _torch_bytes(legacy=True)[:4000], "truncated", ["ends before its data", "download"]),
    "cut.safetensors": (lambda tmp: _safetensors_bytes(tmp)[:5000], "truncated", ["safetensors", "cut off"]),
    "header.safetensors": (b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all" + b"\0" * 64, "safetensors",
                           ["damaged header"]),
    "random.pth": (lambda tmp: np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes(), "unknown",
                   ["neither safetensors nor a torch checkpoint", "damaged"]),
    "archive.ckpt": ("zip", "zip", ["zip archive but not a torch checkpoint", "readme.txt"]),
}


def _write_broken(tmp_path, name):
    import zipfile

    content = BROKEN[name][0]
    path = tmp_path / name
    if content == "zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    else:
        path.write_bytes(content(tmp_path) if callable(content) else content)
    return path


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_unreadable_files_say_what_they_are_and_what_to_do(tmp_path, name):
    """Before: a zero-byte file raised a bare EOFError, text 'KeyError: 101' or 'needs globals outside the safe
    allow-list ... weights_only=False will likely succeed', random bytes the same pickle advice."""
    path = _write_broken(tmp_path, name)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path)
    _, kind, words = BROKEN[name]
    msg = str(err.value)
    assert err.value.kind == kind and err.value.path == str(path), (err.value.kind, msg)
    assert str(path) in msg and "\n" not in msg
    for word in words:
        assert word in msg, (word, msg)
    assert "weights_only" not in msg and "allow-list" not in msg and "aware-restore convert" not in msg


def test_download_advice_names_the_download_command_for_official_files(tmp_path):
    path = tmp_path / "universal-ir.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match=r"aware-restore download universal-ir\.pth"):
        load_state_dict(path)
    (tmp_path / "DAPE.pth").write_bytes(b"")  # no mirror: the generic advice
    with pytest.raises(CheckpointError, match="download or copy it again"):
        load_state_dict(tmp_path / "DAPE.pth")


def test_a_folder_with_a_model_name_is_not_a_file(tmp_path):
    (tmp_path / "w.pth").mkdir()
    with pytest.raises(CheckpointError, match="folder, not a file") as err:
        load_state_dict(tmp_path / "w.pth")
    assert err.value.kind == "missing"
    with pytest.raises(CheckpointError, match="not found") as err:
        load_state_dict(tmp_path / "nothing.pth")
    assert err.value.kind == "missing"


def test_misnamed_files_are_read_by_content(tmp_path, caplog):
    """Before: a safetensors file named .pth was 'a pickle that needs globals outside the safe allow-list', a torch
    file named .safetensors 'Could not read ... as safetensors'."""
    sd = _irsde_like()
    st = save_safetensors(sd, tmp_path / "a.safetensors")
    renamed = st.rename(tmp_path / "a.pth")
    with caplog.at_level("INFO"):
        out = load_state_dict(renamed)
    assert set(out) == set(sd) and "rename it to .safetensors" in caplog.text
    assert read_metadata(renamed)["format"] == "pt"  # metadata read by content too
    torch.save(sd, tmp_path / "b.safetensors")
    assert set(load_state_dict(tmp_path / "b.safetensors")) == set(sd)
    assert read_metadata(tmp_path / "b.safetensors") == {}


def test_foreign_globals_get_the_re_save_advice(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Evil(tmp_path / "pwned")}, path)
    with pytest.raises(CheckpointError) as err:
        load_state_dict(path)
    msg = str(err.value)
    assert err.value.kind == "pickle-globals" and "posix.system" in msg and "nothing in it was run" in msg
    assert "safetensors.torch.save_file" in msg and "aware-restore convert" not in msg
    assert not (tmp_path / "pwned").exists()
    torch.save({"foo": 1}, tmp_path / "nodict.pth")
    with pytest.raises(CheckpointError) as err:
        load_state_dict(tmp_path / "nodict.pth")
    assert err.value.kind == "not-a-state-dict"


def test_cli_info_lists_unreadable_files_with_the_reason_and_exits_0(tmp_path, capsys):
    """Before: one zero-byte file made `aware-restore info` crash with EOFError (exit 1, no listing)."""
    folder = tmp_path / "models" / "daclip"
    folder.mkdir(parents=True)
    for name in ("empty.pth", "lfs.pth", "cut.pth", "random.pth"):
        _write_broken(folder, name)
    save_safetensors(_irsde_like(), tmp_path / "models" / "irsde" / "good.safetensors")
    assert cli_main(["--models-dir", str(tmp_path / "models"), "info"]) == 0
    text = capsys.readouterr().out
    assert sum(line.lstrip().startswith("unreadable ") for line in text.splitlines()) == 4, text
    assert any(line.lstrip().startswith("irsde ") for line in text.splitlines()), text
    for kind in ("empty:", "text:", "truncated:", "unknown:"):
        assert kind in text, text
    assert cli_main(["--models-dir", str(tmp_path / "models"), "info", "--json"]) == 0
    import json

    report = json.loads(capsys.readouterr().out)
    bad = {Path(f["file"]).name: f for f in report["files"] if f["family"] == "unreadable"}
    assert set(bad) == {"empty.pth", "lfs.pth", "cut.pth", "random.pth"}
    assert bad["empty.pth"]["kind"] == "empty" and "empty (0 bytes)" in bad["empty.pth"]["error"]


def test_cli_convert_of_a_broken_file_is_one_error_line_without_traceback(tmp_path):
    """Before: `convert` of a zero-byte file printed an EOFError traceback."""
    import subprocess
    import sys

    bad = tmp_path / "empty.pth"
    bad.write_bytes(b"")
    out = subprocess.run([sys.executable, "-m", "aware_restore", "convert", str(bad), str(tmp_path / "o.safetensors")],
                         capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip() and "Warning" not in line]
    assert len(lines) == 1 and lines[0].startswith("ERROR Cannot read") and "empty (0 bytes)" in lines[0], out.stderr
