"""``aware-restore auto IN_DIR --out OUT_DIR [--ray [ADDRESS]]``: the router on every image of a folder,
resumable.

Per image ``NAME.ext`` the run writes ``OUT_DIR/NAME.png`` (the result) and then ``OUT_DIR/NAME.json`` (the
sidecar: route, probabilities, fidelity numbers, model file hashes, seed, thresholds, hashes of the input, of the
written file and of the float result). The sidecar is written last and atomically (temporary file + rename), so a
sidecar with ``"status": "done"`` whose input and output hashes still match means the image is finished: a
re-run skips it, and a run killed at any moment loses at most the image in progress. An image that fails gets a
sidecar with ``"status": "error"`` and the message; the run goes on, and a re-run tries it again.

Seeds: image ``NAME.ext`` restores with ``(seed + crc32(NAME.ext)) mod 2**32``, independent of the order, so a
resumed run, a local run and a Ray run (``--ray``, see :mod:`.auto_ray`) give the same results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
SIDECAR_VERSION = 1


@dataclass
class AutoJob:
    """Everything a worker needs (plain values: it travels to Ray workers)."""

    in_dir: str
    out_dir: str
    irsde: str
    daclip: str
    seed: int = 0
    tile: int = 0
    device: str = "cpu"
    threads: int = 0
    map_window: int = 0
    thresholds: dict = field(default_factory=dict)
    fidelity: dict = field(default_factory=dict)


def list_images(in_dir: str | os.PathLike) -> list[Path]:
    root = Path(in_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"auto: input folder not found: '{in_dir}'")
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def output_names(files: list[Path]) -> dict[str, str]:
    """Input file name → output stem (``NAME``; ``NAME_ext`` when two inputs share a stem)."""
    stems: dict[str, int] = {}
    for p in files:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p.name: (p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}") for p in files}


def sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def image_seed(seed: int, name: str) -> int:
    return (int(seed) + zlib.crc32(name.encode("utf-8"))) % (2 ** 32)


def sidecar_complete(path: Path, input_path: Path) -> bool:
    """A finished sidecar: status done, the input unchanged, the output present and unchanged."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    if data.get("status") != "done" or data.get("version") != SIDECAR_VERSION:
        return False
    out = path.parent / str(data.get("output", ""))
    try:
        return out.is_file() and data.get("input_sha256") == sha256(input_path) and \
            data.get("output_sha256") == sha256(out)
    except OSError:
        return False


def write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, path)


def save_output(tensor, path: Path) -> Path:
    """Write the result image (atomically: a killed run leaves no half-written file under the final name)."""
    from ..core.image import save_image

    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    save_image(tensor, tmp)
    os.replace(tmp, path)
    return path


class AutoRunner:
    """Loads the models once and processes images one at a time (the local loop and every Ray actor)."""

    def __init__(self, job: AutoJob | dict) -> None:
        import torch

        from ..core.auto import FidelityThresholds, Thresholds
        from ..core.daclip import load_daclip
        from ..core.irsde import load_irsde

        self.job = job if isinstance(job, AutoJob) else AutoJob(**job)
        if self.job.threads:
            torch.set_num_threads(self.job.threads)
        self.thresholds = Thresholds(**self.job.thresholds)
        self.fidelity = FidelityThresholds(**self.job.fidelity)
        self.network = load_irsde(self.job.irsde, device=self.job.device)
        self.daclip = load_daclip(self.job.daclip).to(self.job.device)
        self.models = {"irsde": {"file": Path(self.job.irsde).name, "sha256": sha256(self.job.irsde)},
                       "daclip": {"file": Path(self.job.daclip).name, "sha256": sha256(self.job.daclip)}}

    def process(self, input_path: str | os.PathLike, out_stem: str) -> dict:
        """Restore one image, write its result and sidecar; never raises for a bad image (error sidecar)."""
        import torch

        from ..core.auto.pipeline import auto_restore
        from ..core.errors import AwareRestoreError
        from ..core.image import load_image

        src = Path(input_path)
        out_dir = Path(self.job.out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        sidecar = out_dir / f"{out_stem}.json"
        seed = image_seed(self.job.seed, src.name)
        t0 = time.perf_counter()
        base = {"version": SIDECAR_VERSION, "input": src.name, "seed": seed, "models": self.models,
                "thresholds": asdict(self.thresholds), "fidelity_thresholds": asdict(self.fidelity)}
        try:
            image = load_image(src).to(self.job.device)
            with torch.no_grad():
                res = auto_restore(self.daclip, self.network, image, self.thresholds, seed=seed,
                                   fidelity_thresholds=self.fidelity, tile=self.job.tile or None,
                                   map_window=self.job.map_window or None)
            result = res.images[0].float().cpu().contiguous()
            out = save_output(result, out_dir / f"{out_stem}.png")
            entry = res.report()[0]
            data = dict(base, status="done", input_sha256=sha256(src), output=out.name,
                        output_sha256=sha256(out), result_sha256=hashlib.sha256(result.numpy().tobytes()).hexdigest(),
                        route=entry["route"], decision=entry, fidelity=entry.pop("fidelity"),
                        seconds=round(time.perf_counter() - t0, 3))
        except (AwareRestoreError, FileNotFoundError, OSError, ValueError, RuntimeError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            data = dict(base, status="error", error=f"{type(exc).__name__}: {first}",
                        seconds=round(time.perf_counter() - t0, 3))
            log.error("%s: %s", src.name, data["error"])
        write_json_atomic(sidecar, data)
        return summary_row(data)


def summary_row(data: dict) -> dict:
    fid = data.get("fidelity") or {}
    return {"input": data.get("input", "?"), "status": data.get("status", "?"), "route": data.get("route", "-"),
            "psnr": fid.get("psnr"), "ssim": fid.get("ssim"), "passed": fid.get("passed"),
            "seconds": data.get("seconds"), "error": data.get("error", "")}


def summary_table(rows: list[dict], skipped: int) -> str:
    width = max([len("image"), *(len(r["input"]) for r in rows)]) if rows else len("image")
    lines = [f"{'image'.ljust(width)}  status  route  psnr    ssim   fidelity  seconds"]
    for r in rows:
        psnr = f"{r['psnr']:6.2f}" if isinstance(r["psnr"], (int, float)) else "     -"
        ssim = f"{r['ssim']:.3f}" if isinstance(r["ssim"], (int, float)) else "    -"
        fid = {True: "pass", False: "FAIL", None: "-"}[r["passed"]]
        secs = f"{r['seconds']:.2f}" if isinstance(r["seconds"], (int, float)) else "-"
        line = f"{r['input'].ljust(width)}  {r['status']:6}  {r['route']:5}  {psnr}  {ssim}  {fid:8}  {secs:>7}"
        lines.append(line + (f"  {r['error']}" if r["error"] else ""))
    routes: dict[str, int] = {}
    for r in rows:
        routes[r["route"]] = routes.get(r["route"], 0) + 1
    errors = sum(r["status"] != "done" for r in rows)
    lines.append(f"processed {len(rows)}, skipped {skipped} (already complete), errors {errors}; routes: "
                 + (", ".join(f"{k} {v}" for k, v in sorted(routes.items())) or "-"))
    return "\n".join(lines)


def plan_job(args: argparse.Namespace) -> tuple[AutoJob, list[tuple[Path, str]], int]:
    """The job, the pending (file, output stem) pairs and the number of complete ones skipped."""
    from .irsde import _find

    models_dir = list(getattr(args, "models_dir", []) or [])
    irsde = Path(args.model) if args.model else _find("irsde", ("*universal-ir*", "*"), models_dir,
                                                      "IR-SDE model (universal-ir.pth)")
    daclip = Path(args.daclip) if args.daclip else _find("daclip", ("*daclip_ViT-B-32*", "*B-32*", "*"), models_dir,
                                                         "DA-CLIP model")
    thresholds = {k: getattr(args, k) for k in ("degraded", "full", "min_strength", "region", "whole_image",
                                                "low_resolution", "feather")}
    job = AutoJob(str(Path(args.in_dir).resolve()), str(Path(args.out).resolve()), str(irsde.resolve()),
                  str(daclip.resolve()), args.seed, args.tile, args.device, args.threads, args.map_window,
                  thresholds, {"min_psnr": args.min_psnr, "min_ssim": args.min_ssim})
    files = list_images(job.in_dir)
    if Path(job.out_dir) == Path(job.in_dir):
        from ..core.errors import InputError

        raise InputError("auto: --out must be another folder than IN_DIR (the results would be read as inputs "
                         "by the next run)")
    names = output_names(files)
    out = Path(job.out_dir)
    pending = [(p, names[p.name]) for p in files if not sidecar_complete(out / f"{names[p.name]}.json", p)]
    return job, pending, len(files) - len(pending)


def _cmd_auto(args: argparse.Namespace) -> int:
    job, pending, skipped = plan_job(args)
    log.info("auto: %d image(s) to process, %d already complete, results in %s", len(pending), skipped,
             job.out_dir)
    if args.ray is not None:
        from .auto_ray import run_ray

        rows = run_ray(job, pending, address=args.ray or None, workers=args.ray_workers)
    else:
        rows = run_local(job, pending)
    sys.stdout.write(summary_table(rows, skipped) + "\n")
    if len(rows) < len(pending):
        return 130  # interrupted: the summary covers what finished; the same command resumes
    return 1 if any(r["status"] != "done" for r in rows) else 0


def run_local(job: AutoJob, pending: list[tuple[Path, str]]) -> list[dict]:
    from tqdm import tqdm

    rows: list[dict] = []
    if not pending:
        return rows
    runner = AutoRunner(job)
    bar = tqdm(total=len(pending), unit="image", file=sys.stderr, disable=None)
    try:
        for path, stem in pending:
            bar.set_postfix_str(path.name)
            rows.append(runner.process(path, stem))
            bar.update(1)
    except KeyboardInterrupt:
        log.warning("auto: interrupted; %d image(s) finished in this run, re-run the same command to resume",
                    len(rows))
    finally:
        bar.close()
    return rows


def register(subparsers) -> None:
    from ..core.auto import FidelityThresholds, Thresholds

    t, f = Thresholds(), FidelityThresholds()
    p = subparsers.add_parser("auto", help="restore every image of a folder with the route it needs (resumable; "
                                           "--ray to scale out)")
    p.add_argument("in_dir", metavar="IN_DIR", help="folder of images (png, jpg, webp, tif, bmp)")
    p.add_argument("--out", required=True, metavar="OUT_DIR", help="results and JSON sidecars go here")
    p.add_argument("--model", default=None, help="IR-SDE network (default: universal-ir in models/irsde)")
    p.add_argument("--daclip", default=None, help="DA-CLIP model (default: daclip_ViT-B-32 in models/daclip)")
    p.add_argument("--seed", type=int, default=0, help="base seed; each image adds crc32 of its file name")
    p.add_argument("--tile", type=int, default=0, help="IR-SDE tile side (exact low-memory mode; 0: whole image)")
    p.add_argument("--map-window", type=int, default=0, help="degradation-map window (0: the model's input size)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads per process (0: torch default)")
    p.add_argument("--degraded", type=float, default=t.degraded, help="restore when a degradation reaches this")
    p.add_argument("--full", type=float, default=t.full, help="probability for full-strength restoration")
    p.add_argument("--min-strength", type=float, default=t.min_strength, help="strength just above --degraded")
    p.add_argument("--region", type=float, default=t.region, help="per-pixel probability that marks a region")
    p.add_argument("--whole-image", type=float, default=t.whole_image, help="degraded fraction -> whole image")
    p.add_argument("--low-resolution", type=int, default=t.low_resolution,
                   help="shorter side counted as low resolution (SeeSR is not run by this command)")
    p.add_argument("--feather", type=int, default=t.feather, help="feather radius of regional masks (pixels)")
    p.add_argument("--min-psnr", type=float, default=f.min_psnr, help="fidelity: minimum PSNR (dB)")
    p.add_argument("--min-ssim", type=float, default=f.min_ssim, help="fidelity: minimum SSIM")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run on Ray Data: no ADDRESS starts a local Ray; 'auto' or ray://host:10001 joins a cluster")
    p.add_argument("--ray-workers", type=int, default=2, help="Ray actors (each loads the models once)")
    p.set_defaults(func=_cmd_auto)
