"""What every benchmark script shares: process and device memory peaks, device synchronisation, and cases run in a
fresh child process that reports one JSON line (so each case has its own peak RSS).

The scripts run as files (``python benchmarks/bench_x.py``, or through ``run_all.py``), so this module is imported
as ``_common`` from the scripts' folder."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
from pathlib import Path


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def current_rss_mb() -> float:
    """Resident memory of this process now, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def sync(device: str) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    """Start a new peak measurement: CUDA's peak allocation, or on Linux the process's VmHWM."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS
    except OSError:
        pass


def peak_mb(device: str) -> float:
    """The peak since :func:`reset_peak`: CUDA's max allocated, else the process's VmHWM (or peak RSS), MiB."""
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() / 2**20
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def run_child(argv: list[str], threads: int | None = None, check: bool = True) -> dict:
    """``python *argv`` in a fresh process; its last stdout line, parsed as JSON. ``threads`` also sets
    OMP_NUM_THREADS / MKL_NUM_THREADS for it. A failed child raises (``check``) or gives ``{"error": ...}``."""
    env = None if threads is None else dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    res = subprocess.run([sys.executable, *argv], check=check, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        return {"error": res.stderr.strip().splitlines()[-1] if res.stderr.strip() else f"rc {res.returncode}"}
    return json.loads(res.stdout.strip().splitlines()[-1])
