"""IR-SDE (DA-CLIP universal restoration) on CPU: one network step at 256² and 512², and peak RSS of a restore
at 512² (whole image) and 1024² (tiled), with the real-size universal-ir network (random weights, shapes from
the official key list).

A full 100-step restore at these sizes takes far too long on a small CPU, so each restore case runs the real
sampler loop (100-step schedule) and stops it after ``--restore-steps`` steps via the progress callback; the
per-step working set is the same at every step, so the peak RSS is that of a full run, and the full-run time is
extrapolated as 100 x the measured time per step (reported as such). Each case runs in a fresh process so peaks
do not mix.

    python benchmarks/bench_irsde.py [--threads N] [--restore-steps K] [--cases step256,...] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from _common import peak_rss_mb, run_child

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "fixtures" / "irsde" / "irsde_keys_universal-ir.txt"
RESULTS = ROOT / "benchmarks" / "results" / "irsde.json"


class _Stop(Exception):
    pass


def _network():
    from aware_restore.core.checkpoint import meta_state_dict_from_key_list
    from aware_restore.core.irsde import build_irsde, infer_config

    config = infer_config(meta_state_dict_from_key_list(KEYS))
    net = build_irsde(config, "cpu").eval().requires_grad_(False)
    return net, config


def case_step(size: int, repeats: int) -> dict:
    import torch

    net, config = _network()
    g = torch.Generator().manual_seed(0)
    x, mu = torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)
    ctx = torch.randn(1, config.context_dim, generator=g)
    times, cpu = [], []
    with torch.no_grad():
        for _ in range(repeats + 1):
            t0, c0 = time.perf_counter(), time.process_time()
            net(x, mu, 50, text_context=ctx, image_context=ctx)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    times, cpu = times[1:], cpu[1:]  # the first call warms up allocators
    return {"case": f"step_{size}", "size": size, "seconds_per_step": min(times),
            "cpu_seconds_per_step": min(cpu), "repeats": repeats,
            "params_m": sum(p.numel() for p in net.parameters()) / 1e6, "peak_rss_mb": peak_rss_mb()}


def case_restore(size: int, tile: int | None, overlap: int, steps: int) -> dict:
    import torch
    from aware_restore.core.daclip import DaclipEmbeds
    from aware_restore.core.irsde import restore

    net, config = _network()
    g = torch.Generator().manual_seed(1)
    img = torch.rand(1, 3, size, size, generator=g)
    emb = DaclipEmbeds(torch.randn(1, config.context_dim, generator=g), torch.randn(1, config.context_dim, generator=g))
    stamps: list[float] = []

    def progress(done: int, total: int) -> None:
        stamps.append(time.perf_counter())
        if done >= steps:
            raise _Stop

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        restore(net, emb, img, tile=tile, tile_overlap=overlap, progress=progress)
    except _Stop:
        pass
    per_step = (stamps[-1] - t0) / len(stamps)
    cpu_per_step = (time.process_time() - c0) / len(stamps)
    return {"case": f"restore_{size}" + (f"_tile{tile}" if tile else ""), "size": size, "tile": tile,
            "overlap": overlap if tile else None, "steps_run": len(stamps), "seconds_per_step": per_step,
            "cpu_seconds_per_step": cpu_per_step,
            "extrapolated_100_steps_s": per_step * 100, "peak_rss_mb": peak_rss_mb()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--restore-steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="256² step only (smoke run)")
    ap.add_argument("--cases", default="step256,step512,restore512,restore1024t",
                    help="comma-separated: step256, step512, restore512, restore1024t, step1024 (whole 1024² image)")
    ap.add_argument("--results", default=str(RESULTS), help="JSON output path")
    ap.add_argument("--child", nargs="*", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child is not None:
        kind, *rest = args.child
        if kind == "step":
            res = case_step(int(rest[0]), int(rest[1]))
        else:
            tile = int(rest[1]) or None
            res = case_restore(int(rest[0]), tile, int(rest[2]), int(rest[3]))
        sys.stdout.write(json.dumps(res) + "\n")
        return 0

    threads = args.threads or torch.get_num_threads()
    rs = str(args.restore_steps)
    cases = {"step256": ["step", "256", str(args.repeats)], "step512": ["step", "512", str(args.repeats)],
             "restore512": ["restore", "512", "0", "0", rs], "restore1024t": ["restore", "1024", "512", "64", rs],
             "step1024": ["step", "1024", "1"]}
    names = ["step256"] if args.quick else [c for c in args.cases.split(",") if c]
    unknown = [n for n in names if n not in cases]
    if unknown:
        raise SystemExit(f"unknown cases {unknown}; choose from {sorted(cases)}")
    rows = []
    for name in names:
        rows.append(run_child([__file__, "--child", *cases[name], "--threads", str(threads)]))
        rows[-1]["load_average_1min"] = round(os.getloadavg()[0], 2)
        _write(rows, threads, torch.__version__, Path(args.results))
    _table(rows, threads, torch.__version__)
    return 0


def _write(rows: list[dict], threads: int, torch_version: str, path: Path = RESULTS) -> None:
    report = {"device": "cpu", "threads": threads, "torch": torch_version, "machine": platform.machine(),
              "processor": platform.processor() or platform.machine(), "network": "universal-ir (nf 64, ch_mult "
              "1-2-4-8, context 512), random weights", "note": "restore cases: real 100-step sampler stopped after "
              "steps_run steps; full-run time extrapolated; peak RSS is per process (weights included)",
              "cpu_count": os.cpu_count(), "results": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


def _table(rows: list[dict], threads: int, torch_version: str) -> None:
    lines = [f"IR-SDE on CPU ({threads} threads, torch {torch_version})",
             f"{'case':24} {'s/step':>9} {'CPU s/step':>10} {'100 steps (s)':>14} {'peak RSS MB':>12}"]
    for r in rows:
        full = r.get("extrapolated_100_steps_s", r["seconds_per_step"] * 100)
        lines.append(f"{r['case']:24} {r['seconds_per_step']:9.2f} {r['cpu_seconds_per_step']:10.2f} {full:14.0f} "
                     f"{r['peak_rss_mb']:12.0f}")
    sys.stdout.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
