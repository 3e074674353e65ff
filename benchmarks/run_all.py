"""Run every benchmarks/bench_*.py (each prints its table and writes benchmarks/results/<family>.json), then
print the combined table that the README shows."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    only = set(argv)
    for script in sorted(HERE.glob("bench_*.py")):
        if only and script.stem.removeprefix("bench_") not in only:
            continue
        sys.stdout.write(f"\n=== {script.name}\n")
        runpy.run_path(str(script), run_name="__main__")
    sys.stdout.write("\n=== results\n")
    for res in sorted((HERE / "results").glob("*.json")):
        data = json.loads(res.read_text())
        sys.stdout.write(f"{res.stem}: {json.dumps(data.get('summary', data))[:400]}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
