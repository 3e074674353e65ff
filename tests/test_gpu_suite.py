"""benchmarks/gpu_suite.py runs every case on the CPU with --quick (the same code paths as on a GPU, tiny models),
in bf16, and every result is finite."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_suite_quick_on_cpu(tmp_path):
    suite = runpy.run_path(str(ROOT / "benchmarks" / "gpu_suite.py"))
    out = tmp_path / "suite.json"
    rc = suite["main"](["--device", "cpu", "--quick", "--out", str(out)])
    result = json.loads(out.read_text())
    rows = {r["case"]: r for r in result["rows"]}
    assert set(rows) == set(suite["CASES"])
    assert rc == 0, [r for r in result["rows"] if "error" in r or not r.get("finite")]
    assert all(r["dtype"] == "bfloat16" and r["seconds"] > 0 and r["finite"] for r in rows.values())
