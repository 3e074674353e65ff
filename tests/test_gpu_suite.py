"""benchmarks/gpu_suite.py runs every case on the CPU with --quick (the same code paths as on a GPU, tiny models),
in bf16, and every result is finite. The SeeSR native DynamicVRAM on/off cases need a real ComfyUI
(COMFYUI_NEW_DIR / COMFYUI_DIR): run there, skipped (and reported so) without one."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_suite_quick_on_cpu(tmp_path):
    import os

    suite = runpy.run_path(str(ROOT / "benchmarks" / "gpu_suite.py"))
    out = tmp_path / "suite.json"
    rc = suite["main"](["--device", "cpu", "--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == set(suite["CASES"])
    assert rc == 0, [r for r in result["rows"] if "error" in r or not r.get("finite")]
    native = {k for k in rows if k.startswith("seesr_native_dvram")}
    assert native == {"seesr_native_dvram_on", "seesr_native_dvram_off"}
    if os.environ.get("COMFYUI_NEW_DIR") or os.environ.get("COMFYUI_DIR"):
        assert not any("skipped" in rows[k] for k in native), [rows[k] for k in native]
        assert rows["seesr_native_dvram_off"]["dynamic_vram"] == "off"
    else:
        assert all("skipped" in rows[k] for k in native)
    ran = [r for r in rows.values() if "skipped" not in r]
    assert all(r["dtype"] == "bfloat16" and r["seconds"] > 0 and r["finite"] for r in ran)
