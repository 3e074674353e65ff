"""``aware-restore auto``: folder run with sidecars, resume after a hard kill, per-image errors, and the Ray
runner equal to the local run (issue 20). IR-SDE runs a 2-step schedule here (the outcome checked — routes,
sidecars, resume, equality — does not depend on the 100 steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import FIXTURES, TESTS, make_test_image
from PIL import Image

MODELS = ["--model", str(FIXTURES / "irsde" / "irsde_unet_tiny.safetensors"),
          "--daclip", str(FIXTURES / "daclip" / "daclip_tiny.safetensors")]
RESTORE_ALL = ["--degraded", "0", "--full", "0", "--region", "0", "--whole-image", "0", "--threads", "1"]


def _images(folder: Path, n: int, size=(16, 20)) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(make_test_image(size[0], size[1], i)).save(folder / f"img{i:02d}.png")
    return sorted(p.name for p in folder.iterdir())


def _sidecars(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}


@pytest.fixture()
def short(monkeypatch):
    from aware_restore.core.irsde.sde import IRSDE

    monkeypatch.setattr(IRSDE, "timesteps", lambda self: [2, 1])


def _run(argv, capsys):
    from aware_restore.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().out


def test_folder_run_sidecars_errors_and_skip(tmp_path, short, capsys):
    _images(tmp_path / "in", 3)
    (tmp_path / "in" / "broken.png").write_bytes(b"not an image")
    (tmp_path / "in" / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    rc, table = _run(["auto", str(tmp_path / "in"), "--out", str(out), *MODELS, *RESTORE_ALL], capsys)
    assert rc == 1  # one image failed; the others are done
    cars = _sidecars(out)
    assert set(cars) == {"img00", "img01", "img02", "broken"}
    assert cars["broken"]["status"] == "error" and "cannot read the image" in cars["broken"]["error"]
    for name in ("img00", "img01", "img02"):
        c = cars[name]
        assert c["status"] == "done" and c["route"] == "irsde" and (out / c["output"]).is_file()
        assert {"psnr", "ssim", "color_shift", "passed"} <= set(c["fidelity"])
        assert set(c["decision"]["probabilities"]) >= {"noisy", "clean"}
        assert len(c["models"]["irsde"]["sha256"]) == 64 and len(c["models"]["daclip"]["sha256"]) == 64
        assert isinstance(c["seed"], int) and c["thresholds"]["degraded"] == 0.0
    assert "processed 4, skipped 0" in table and "errors 1" in table and "img01.png" in table
    # second run: the three complete images are skipped, the broken one is tried again
    rc, table = _run(["auto", str(tmp_path / "in"), "--out", str(out), *MODELS, *RESTORE_ALL], capsys)
    assert "processed 1, skipped 3" in table
    # a changed output file makes its sidecar incomplete
    (out / "img01.png").write_bytes(b"tampered")
    (tmp_path / "in" / "broken.png").unlink()
    rc, table = _run(["auto", str(tmp_path / "in"), "--out", str(out), *MODELS, *RESTORE_ALL], capsys)
    assert rc == 0 and "processed 1, skipped 2" in table


KILLER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from auto_probe import short_schedule
short_schedule()
from aware_restore.cli import auto as A
orig, count = A.save_output, [0]
def killing(*args, **kwargs):
    out = orig(*args, **kwargs)
    count[0] += 1
    if count[0] == {kill_after}:  # the image file is written, its sidecar not yet: a hard kill right there
        os.kill(os.getpid(), signal.SIGKILL)
    return out
A.save_output = killing
from aware_restore.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_folder_run_killed_midway_resumes_with_the_rest(tmp_path, short, capsys):
    names = _images(tmp_path / "in", 20, size=(12, 12))
    out = tmp_path / "out"
    argv = ["auto", str(tmp_path / "in"), "--out", str(out), *MODELS, *RESTORE_ALL]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    first = subprocess.run([sys.executable, "-c", KILLER.format(tests=str(TESTS), kill_after=8), *argv],
                           capture_output=True, text=True, env=env, timeout=300, check=False)
    assert first.returncode == -9, first.stderr[-2000:]
    cars = _sidecars(out)
    assert len(cars) == 7 and all(c["status"] == "done" for c in cars.values())
    assert (out / "img07.png").is_file() and not (out / "img07.json").exists()  # killed before its sidecar
    assert not list(out.glob(".*.tmp*"))  # nothing half-written under a final name
    rc, table = _run(argv, capsys)  # the re-run (in-process, same 2-step schedule)
    assert rc == 0 and "processed 13, skipped 7" in table
    cars = _sidecars(out)
    assert sorted(f"{k}.png" for k in cars) == names and all(c["status"] == "done" for c in cars.values())
    for c in cars.values():
        assert {"route", "decision", "fidelity", "models", "seed", "output_sha256", "result_sha256"} <= set(c)


def test_ray_run_equals_local_run(tmp_path, short, capsys):
    ray = pytest.importorskip("ray")
    _images(tmp_path / "in", 6)
    rc, _ = _run(["auto", str(tmp_path / "in"), "--out", str(tmp_path / "local"), *MODELS, *RESTORE_ALL], capsys)
    assert rc == 0
    pypath = os.pathsep.join([str(TESTS), *[p for p in sys.path if p]])
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": pypath, "OMP_NUM_THREADS": "1"},
                          "worker_process_setup_hook": "auto_probe.short_schedule"})
    try:
        rc, table = _run(["auto", str(tmp_path / "in"), "--out", str(tmp_path / "ray"), *MODELS, *RESTORE_ALL,
                          "--ray", "--ray-workers", "2"], capsys)
    finally:
        ray.shutdown()
    assert rc == 0 and "processed 6, skipped 0" in table
    local, remote = _sidecars(tmp_path / "local"), _sidecars(tmp_path / "ray")
    assert set(local) == set(remote) and len(local) == 6
    for name in local:
        a, b = dict(local[name]), dict(remote[name])
        a.pop("seconds"), b.pop("seconds")
        assert a == b, name  # same route, probabilities, fidelity numbers, seeds and bitwise-equal results
        assert a["result_sha256"] == b["result_sha256"]
    assert len({c["result_sha256"] for c in local.values()}) == 6


def test_ray_missing_and_same_folder_are_clear_errors(tmp_path, monkeypatch, capsys):
    from aware_restore.cli.auto import AutoJob
    from aware_restore.cli.auto_ray import run_ray
    from aware_restore.core.errors import AwareRestoreError

    _images(tmp_path / "in", 1)
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed
    job = AutoJob(str(tmp_path / "in"), str(tmp_path / "out"), "x", "y")
    with pytest.raises(AwareRestoreError, match=r"pip install 'aware-restore\[ray\]'"):
        run_ray(job, [(tmp_path / "in" / "img00.png", "img00")])
    rc, _ = _run(["auto", str(tmp_path / "in"), "--out", str(tmp_path / "in"), *MODELS], capsys)
    assert rc == 1 and not list((tmp_path / "in").glob("*.json"))


def test_ctrl_c_stops_with_a_summary_and_resumes(tmp_path, short, monkeypatch, capsys):
    from aware_restore.cli import auto as A

    _images(tmp_path / "in", 3)
    argv = ["auto", str(tmp_path / "in"), "--out", str(tmp_path / "out"), *MODELS, *RESTORE_ALL]
    real, calls = A.AutoRunner.process, []

    def interrupted(self, path, stem):
        calls.append(stem)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, path, stem)

    monkeypatch.setattr(A.AutoRunner, "process", interrupted)
    rc, table = _run(argv, capsys)
    assert rc == 130 and "processed 1, skipped 0" in table and len(_sidecars(tmp_path / "out")) == 1
    monkeypatch.setattr(A.AutoRunner, "process", real)
    rc, table = _run(argv, capsys)
    assert rc == 0 and "processed 2, skipped 1" in table


def test_an_image_pil_refuses_as_too_large_gets_an_error_sidecar(tmp_path, short, monkeypatch, capsys):
    """PIL's decompression-bomb refusal is an ``Exception`` of its own (not OSError): it used to escape the
    per-image error handling and stop the whole folder run with a traceback."""
    from PIL import Image as PILImage

    _images(tmp_path / "in", 1)
    Image.fromarray(make_test_image(64, 64, 7)).save(tmp_path / "in" / "huge.png")
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2x the limit: refused; 16x20 passes
    out = tmp_path / "out"
    rc, table = _run(["auto", str(tmp_path / "in"), "--out", str(out), *MODELS, *RESTORE_ALL], capsys)
    cars = _sidecars(out)
    assert rc == 1 and "processed 2" in table and "errors 1" in table
    assert cars["huge"]["status"] == "error" and "cannot read the image" in cars["huge"]["error"]
    assert cars["img00"]["status"] == "done"

