"""``aware-restore auto IN_DIR --out OUT_DIR --ray [ADDRESS]``: the folder job on Ray Data.

The pending files (those without a complete sidecar, decided by the driver exactly as the local run does) become
a Ray dataset of rows ``{"path", "stem"}``; ``map_batches`` runs them through a pool of ``workers`` actors
(:class:`RayAutoWorker`), each of which loads the models once (an :class:`.auto.AutoRunner`) and then restores
image after image, writing the result and the sidecar itself. Every worker therefore needs the input folder, the
output folder and the model files at the same paths (one machine, or a shared filesystem on a cluster). Results
equal the local run's: same per-image seeds (from the file name), same code, same thread count
(``--threads``, default 1 per actor here).

``ray`` is an optional dependency: ``pip install 'aware-restore[ray]'``.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

from ..core.errors import AwareRestoreError
from .auto import AutoJob, AutoRunner

log = logging.getLogger(__name__)


class RayAutoWorker:
    """A Ray Data actor: the models are loaded once in ``__init__``; each call restores a batch of rows."""

    def __init__(self, job: dict) -> None:
        self.runner = AutoRunner(job)

    def __call__(self, batch: dict) -> dict:
        rows = [self.runner.process(p, s) for p, s in zip(batch["path"], batch["stem"])]
        return {k: [("" if r[k] is None else str(r[k])) if k in ("input", "status", "route", "error") else r[k]
                    for r in rows] for k in rows[0]} if rows else {}


def _import_ray():
    try:
        import ray
    except ImportError:
        raise AwareRestoreError("--ray needs the 'ray' package: pip install 'aware-restore[ray]' (or "
                                "'ray[data]')") from None
    return ray


def run_ray(job: AutoJob, pending: list[tuple[Path, str]], address: str | None = None, workers: int = 2
            ) -> list[dict]:
    """Process ``pending`` on Ray (``address`` None: a local Ray started here, ``workers`` CPUs); returns the
    summary rows in input order."""
    ray = _import_ray()
    if not pending:
        return []
    if workers < 1:
        raise AwareRestoreError(f"--ray-workers must be at least 1, got {workers}")
    job_dict = asdict(job)
    job_dict["threads"] = job.threads or 1  # deterministic and no over-subscription: one torch thread per actor
    started = False
    if not ray.is_initialized():
        kwargs = {"address": address} if address else {"num_cpus": workers, "include_dashboard": False}
        ray.init(logging_level=logging.WARNING, log_to_driver=False, **kwargs)
        started = True
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = True
        ds = ray.data.from_items([{"path": str(p), "stem": s} for p, s in pending],
                                 override_num_blocks=min(len(pending), 4 * workers))
        out = ds.map_batches(RayAutoWorker, fn_constructor_kwargs={"job": job_dict}, batch_size=1,
                             concurrency=workers, num_cpus=1, batch_format="default")
        rows = out.take_all()
    finally:
        if started:
            ray.shutdown()
    clean = []
    for r in rows:
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
        for k in ("psnr", "ssim", "passed", "seconds"):
            if row.get(k) is not None and isinstance(row[k], float) and row[k] != row[k]:
                row[k] = None
        clean.append(row)
    order = {p.name: i for i, (p, _s) in enumerate(pending)}
    return sorted(clean, key=lambda r: order.get(r["input"], len(order)))
