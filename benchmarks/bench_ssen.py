"""SSEN ×4 on CPU (GPU when available): wall time and peak RSS for 128²→512² and 256²→1024², against bicubic
and against the same network without the SSEN reference branch. Each case runs in a fresh subprocess so its
peak RSS is its own. Prints a table and writes benchmarks/results/ssen.json.

    python benchmarks/bench_ssen.py [--threads N] [--repeats N]
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SIZES = (128, 256)
METHODS = ("bicubic", "no_ssen", "ssen")


def _case(method: str, size: int, threads: int, repeats: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F

    from aware_restore.core.ssen import SSENet, load_ssen

    torch.set_num_threads(threads)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    g = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, size, size, generator=g).to(device)
    ref = torch.rand(1, 3, 4 * size, 4 * size, generator=g).to(device)
    if method == "bicubic":
        def fn():
            return F.interpolate(lr, scale_factor=4, mode="bicubic", align_corners=False)
    else:
        model = load_ssen()
        if method == "no_ssen":
            model = SSENet(type(model.config)(**{**model.config.to_json(), "use_ssen": False})).eval()
        model = model.to(device)

        def fn():
            return model(lr, ref)
    times = []
    with torch.inference_mode():
        fn()  # warm-up
        for _ in range(repeats):
            if device == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            out = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
    assert out.shape[-1] == 4 * size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    res = {"method": method, "lr": size, "sr": 4 * size, "seconds": min(times), "peak_rss_mib": peak / 1024,
           "rss_over_import_mib": (peak - base_rss) / 1024}
    if device == "cuda":
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.case:
        sys.stdout.write(json.dumps(_case(args.case[0], int(args.case[1]), args.threads, args.repeats,
                                          args.device)) + "\n")
        return 0
    rows = []
    for size in SIZES:
        for method in METHODS:
            cmd = [sys.executable, __file__, "--case", method, str(size), "--threads", str(args.threads),
                   "--repeats", str(args.repeats), "--device", args.device]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            rows.append(json.loads(out.strip().splitlines()[-1]))
    header = f"{'method':<9} {'LR→SR':<12} {'seconds':>9} {'peak RSS MiB':>13} {'RSS over import':>16}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['method']:<9} {str(r['lr']) + '²→' + str(r['sr']) + '²':<12} {r['seconds']:>9.3f} "
                     f"{r['peak_rss_mib']:>13.0f} {r['rss_over_import_mib']:>16.0f}")
    sys.stdout.write("\n".join(lines) + "\n")
    summary = {f"{r['method']}_{r['lr']}": round(r["seconds"], 3) for r in rows}
    result = {"family": "ssen", "device": args.device, "threads": args.threads, "repeats": args.repeats,
              "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "rows": rows, "summary": summary}
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "ssen.json").write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
