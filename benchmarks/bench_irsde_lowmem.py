"""IR-SDE network: one evaluation over the whole image (``network(...)``) vs the exact low-memory evaluation
(:func:`aware_restore.core.irsde.lowmem.forward_lowmem`), CPU: peak RSS, time per evaluation and the difference
between the two outputs, at 256², 512² and 1024², for a tiny configuration and the real-size universal-ir
network (random weights; shapes from the official key list).

Each case runs in a fresh process (so peaks do not mix) that builds the network and the inputs, records its RSS
(``base``), evaluates once (a warm-up at 256² and 512²; the timed runs follow) and reads ``ru_maxrss``
(``peak``). Times are wall and process CPU seconds (1 thread: CPU time is the steadier figure on a shared
machine). The difference is measured in a separate process that runs both (at the sizes where that fits).

    python benchmarks/bench_irsde_lowmem.py [--threads 1] [--tile 256] [--sizes 256,512,1024] [--configs tiny,real]
        [--repeats 2] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from _common import current_rss_mb, peak_rss_mb, run_child

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "fixtures" / "irsde" / "irsde_keys_universal-ir.txt"
RESULTS = ROOT / "benchmarks" / "results" / "irsde_lowmem.json"


def _network(kind: str):
    import torch
    from aware_restore.core.irsde.unet import ConditionalUNet, UNetConfig, infer_config

    torch.manual_seed(0)
    if kind == "tiny":
        config = UNetConfig(nf=32, ch_mult=(1, 2, 2, 4), context_dim=32)
    else:
        from aware_restore.core.checkpoint import meta_state_dict_from_key_list

        config = infer_config(meta_state_dict_from_key_list(KEYS))
    return ConditionalUNet(config).eval().requires_grad_(False), config


def _inputs(size: int, config):
    import torch

    g = torch.Generator().manual_seed(1)
    xt, mu = torch.rand(1, 3, size, size, generator=g), torch.rand(1, 3, size, size, generator=g)
    ctx = torch.randn(2, config.context_dim, generator=g)
    return xt, mu, ctx[:1], ctx[1:]


def run_case(kind: str, size: int, mode: str, tile: int, repeats: int) -> dict:
    import torch
    from aware_restore.core.irsde.lowmem import forward_lowmem

    net, config = _network(kind)
    xt, mu, text, image = _inputs(size, config)

    def once():
        with torch.no_grad():
            if mode == "whole":
                return net(xt, mu, 50, text_context=text, image_context=image)
            return forward_lowmem(net, xt, mu, 50, text, image, tile=tile)

    base = current_rss_mb()
    times, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = once()
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        del out
    peak = peak_rss_mb()
    return {"config": kind, "size": size, "mode": mode, "tile": tile if mode == "lowmem" else None,
            "base_rss_mb": round(base, 1), "peak_rss_mb": round(peak, 1), "peak_minus_base_mb": round(peak - base, 1),
            "seconds": [round(t, 3) for t in times], "seconds_min": round(min(times), 3),
            "cpu_seconds": [round(t, 3) for t in cpu], "cpu_seconds_min": round(min(cpu), 3)}


def run_diff(kind: str, size: int, tile: int) -> dict:
    import torch
    from aware_restore.core.irsde.lowmem import forward_lowmem

    net, config = _network(kind)
    xt, mu, text, image = _inputs(size, config)
    with torch.no_grad():
        ref = net(xt, mu, 50, text_context=text, image_context=image)
    out = forward_lowmem(net, xt, mu, 50, text, image, tile=tile)
    d = (out - ref).abs()
    return {"config": kind, "size": size, "tile": tile, "max_abs": float(d.max()), "mean_abs": float(d.mean()),
            "rel_l2": float((out - ref).norm() / ref.norm()), "max_abs_ref": float(ref.abs().max())}


def _child(args: list[str], threads: int) -> dict:
    return run_child([str(Path(__file__).resolve()), "--threads", str(threads), *args], threads, check=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--sizes", default="256,512,1024")
    p.add_argument("--configs", default="tiny,real")
    p.add_argument("--repeats", type=int, default=2, help="timed evaluations per case below 1024² (1 at 1024²)")
    p.add_argument("--diff-max-size", type=int, default=512, help="largest size at which the outputs are compared")
    p.add_argument("--quick", action="store_true", help="tiny config at 256² and 512² only")
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--case", help=argparse.SUPPRESS)  # internal: kind:size:mode
    p.add_argument("--diff", help=argparse.SUPPRESS)  # internal: kind:size
    a = p.parse_args(argv)

    import torch

    torch.set_num_threads(a.threads)
    if a.case:
        kind, size, mode = a.case.split(":")
        sys.stdout.write(json.dumps(run_case(kind, int(size), mode, a.tile, a.repeats)) + "\n")
        return 0
    if a.diff:
        kind, size = a.diff.split(":")
        sys.stdout.write(json.dumps(run_diff(kind, int(size), a.tile)) + "\n")
        return 0

    configs = ["tiny"] if a.quick else a.configs.split(",")
    sizes = [256, 512] if a.quick else [int(s) for s in a.sizes.split(",")]
    rows, diffs = [], []
    for kind in configs:
        for size in sizes:
            reps = 1 if size >= 1024 else a.repeats
            pair = {}
            for mode in ("whole", "lowmem"):
                r = _child(["--case", f"{kind}:{size}:{mode}", "--tile", str(a.tile), "--repeats", str(reps)],
                           a.threads)
                r.update(config=kind, size=size, mode=mode)
                pair[mode] = r
                rows.append(r)
            w, lm = pair["whole"], pair["lowmem"]
            if "peak_rss_mb" in w and "peak_rss_mb" in lm:
                lm["peak_ratio_vs_whole"] = round(lm["peak_rss_mb"] / w["peak_rss_mb"], 3)
                lm["time_ratio_vs_whole"] = round(lm["seconds_min"] / w["seconds_min"], 3)
                lm["cpu_ratio_vs_whole"] = round(lm["cpu_seconds_min"] / w["cpu_seconds_min"], 3)
            if size <= a.diff_max_size:
                d = _child(["--diff", f"{kind}:{size}", "--tile", str(a.tile)], a.threads)
                diffs.append(dict(d, config=kind, size=size))

    out = sys.stdout.write
    out(f"IR-SDE network evaluation, whole image vs exact low-memory (tile {a.tile}), {a.threads} thread(s)\n")
    out(f"{'config':6} {'size':>5} {'mode':7} {'peak RSS MB':>11} {'base MB':>8} {'peak-base':>9} {'s/eval':>8}"
        f" {'cpu s':>8} {'peak ratio':>10} {'cpu ratio':>10}\n")
    for r in rows:
        if "error" in r:
            out(f"{r['config']:6} {r['size']:>5} {r['mode']:7} ERROR {r['error']}\n")
            continue
        out(f"{r['config']:6} {r['size']:>5} {r['mode']:7} {r['peak_rss_mb']:>11.0f} {r['base_rss_mb']:>8.0f}"
            f" {r['peak_minus_base_mb']:>9.0f} {r['seconds_min']:>8.2f} {r['cpu_seconds_min']:>8.2f}"
            f" {r.get('peak_ratio_vs_whole', ''):>10} {r.get('cpu_ratio_vs_whole', ''):>10}\n")
    out("\nlowmem vs whole output (one evaluation):\n")
    for d in diffs:
        if "error" in d:
            out(f"  {d['config']} {d['size']}: ERROR {d['error']}\n")
        else:
            out(f"  {d['config']:6} {d['size']:>5}: max abs {d['max_abs']:.2e}, mean abs {d['mean_abs']:.2e}, "
                f"rel L2 {d['rel_l2']:.2e} (max |eps| {d['max_abs_ref']:.2f})\n")
    if not a.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps({
            "what": "one IR-SDE network evaluation: whole image vs forward_lowmem (exact, tiled stages)",
            "machine": {"python": platform.python_version(), "torch": torch.__version__,
                        "cpu": platform.processor() or platform.machine(), "threads": a.threads},
            "tile": a.tile, "rows": rows, "diffs": diffs}, indent=1) + "\n")
        out(f"\nwrote {RESULTS.relative_to(ROOT)}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
