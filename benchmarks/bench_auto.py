"""``aware-restore auto`` on a folder: wall time for N images run locally (one process) vs on Ray Data with W
actors (a local Ray started by the command, one torch thread per actor and for the local run), and whether both
give the same results (the sidecars' hashes of the float results).

Models: the tiny random-weight kit (``tests/fixtures``: DA-CLIP 64 px / 32-wide, IR-SDE universal), every image
forced to the IR-SDE route with the full 100-step schedule, so the time is the pipeline's (map, 100 network
evaluations, fidelity) and Ray's overhead, not a real-size model's. Ray's time includes starting the local Ray
and its actors (each loads the models once). Prints a table and writes benchmarks/results/auto.json.

    python benchmarks/bench_auto.py [--images 20] [--size 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "auto.json"
FIX = ROOT / "tests" / "fixtures"


def make_images(folder: Path, n: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        rng = np.random.default_rng(i)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        img = np.stack([0.5 + 0.4 * np.sin(xx / (5 + c) + yy / (7 + c) + i) for c in range(3)], -1)
        img = np.clip(img + rng.normal(0, 0.08, img.shape), 0, 1)
        Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"img{i:03d}.png")


def run(argv: list[str]) -> tuple[float, int, str]:
    from aware_restore.cli import main

    out = io.StringIO()
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(out):
        rc = main(argv)
    return time.perf_counter() - t0, rc, out.getvalue()


def hashes(folder: Path) -> dict[str, str]:
    return {p.stem: json.loads(p.read_text()).get("result_sha256", "") for p in sorted(folder.glob("*.json"))}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    common = ["--model", str(FIX / "irsde" / "irsde_unet_tiny.safetensors"),
              "--daclip", str(FIX / "daclip" / "daclip_tiny.safetensors"),
              "--degraded", "0", "--full", "0", "--region", "0", "--whole-image", "0", "--threads", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_images(tmp / "in", args.images, args.size)
        t_local, rc1, _ = run(["auto", str(tmp / "in"), "--out", str(tmp / "local"), *common])
        t_ray, rc2, _ = run(["auto", str(tmp / "in"), "--out", str(tmp / "ray"), *common, "--ray",
                             "--ray-workers", str(args.workers)])
        t_resume, rc3, _ = run(["auto", str(tmp / "in"), "--out", str(tmp / "local"), *common])
        same = hashes(tmp / "local") == hashes(tmp / "ray") and len(hashes(tmp / "local")) == args.images
    import ray
    import torch

    rows = [
        {"run": "local (1 process)", "seconds": round(t_local, 2), "per_image": round(t_local / args.images, 3),
         "rc": rc1},
        {"run": f"ray ({args.workers} actors, incl. start)", "seconds": round(t_ray, 2),
         "per_image": round(t_ray / args.images, 3), "rc": rc2},
        {"run": "local re-run (all complete: skip)", "seconds": round(t_resume, 2), "per_image": None, "rc": rc3},
    ]
    head = (f"{args.images} images of {args.size}x{args.size}, tiny kit models, IR-SDE 100 steps, 1 thread each; "
            f"{os.cpu_count()} CPUs")
    lines = [head, f"{'run':38} {'seconds':>8} {'s/image':>8}"]
    lines += [f"{r['run']:38} {r['seconds']:8.2f} {r['per_image'] if r['per_image'] is not None else '-':>8}"
              for r in rows]
    lines.append(f"Ray results identical to local (float result hashes): {same}")
    sys.stdout.write("\n".join(lines) + "\n")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "auto", "images": args.images, "size": args.size, "workers": args.workers, "rows": rows,
        "identical": same, "cpus": os.cpu_count(), "torch": torch.__version__, "ray": ray.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "note": "shared 2-core machine: other jobs were running; times are indicative"}, indent=1) + "\n")
    return 0 if same and rc1 == rc2 == rc3 == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
