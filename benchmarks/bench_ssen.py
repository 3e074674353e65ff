"""SSEN ×4 on CPU (GPU when available): wall time and peak RSS for 128²→512² and 256²→1024², against bicubic
and against the same network without the SSEN reference branch (each case in a fresh subprocess so its peak RSS
is its own), and the held-out quality table of the shipped model (training/ssen/heldout.py: 14 crops of 7 photos
never used in training; bicubic / self-similarity / same-scene references at 0.5×–2× zoom, video frames 1/5/15
apart, an irrelevant photo; Y-PSNR, SSIM, grid ratio; plus the motorcycle stereo partner), the time and peak
memory of the parameter-free match alone at 512² with a 2048² reference, and what tiling changes (tiled vs untiled output of held-out
photos, with and without a reference). Prints the tables and writes benchmarks/results/ssen.json.

    python benchmarks/bench_ssen.py [--threads N] [--repeats N] [--photos DIR] [--no-quality] [--no-speed]
                                    [--no-tiling] [--no-match]

The held-out photos come from ``--photos`` or ``training.ssen.photos.find_photos`` (prepared on first use with
``apt-get download``, ~160 MB).
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from _common import peak_rss_mb, run_child

HERE = Path(__file__).resolve().parent
SIZES = (128, 256)
METHODS = ("bicubic", "no_ssen", "ssen")
MATCH_LR, MATCH_REF = 512, 2048  # the match alone: 512² input, 2048² reference


def _case(method: str, size: int, threads: int, repeats: int, device: str) -> dict:
    import torch
    import torch.nn.functional as F
    from aware_restore.core.ssen import SSENet, load_ssen

    torch.set_num_threads(threads)
    base_rss = peak_rss_mb()
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
    peak = peak_rss_mb()
    res = {"method": method, "lr": size, "sr": 4 * size, "seconds": min(times), "peak_rss_mib": peak,
           "rss_over_import_mib": peak - base_rss}
    if device == "cuda":
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return res


def _match_case(size: int, ref_side: int, threads: int, repeats: int, device: str) -> dict:
    """The parameter-free match alone (scale/rotation search, displacement search, gate) on a ``size``² input with
    a ``ref_side``² reference that shows the input's content at 0.75× zoom (a textured synthetic scene)."""
    import torch
    import torch.nn.functional as F
    from aware_restore.core.ssen import load_ssen
    from aware_restore.core.ssen.resample import bicubic_downscale

    torch.set_num_threads(threads)
    base_rss = peak_rss_mb()
    g = torch.Generator().manual_seed(0)
    side = ref_side + ref_side // 8
    scene = sum(F.interpolate(torch.rand(1, 3, k, k, generator=g), size=(side, side), mode="bicubic",
                              align_corners=False) for k in (16, 64, 256)) / 3
    ref = scene[..., :ref_side, :ref_side].clamp(0, 1).to(device)
    win = round(3 * size)  # 0.75 reference px per output px over a 4·size output
    hr = F.interpolate(scene[..., side // 16:side // 16 + win, side // 16:side // 16 + win], size=(4 * size,) * 2,
                       mode="bicubic", align_corners=False).clamp(0, 1)
    lr = bicubic_downscale(hr).clamp(0, 1).to(device)
    del scene, hr
    module = load_ssen().to(device).ssen
    times = []
    with torch.inference_mode():
        for _ in range(repeats):
            t = time.perf_counter()
            m = module.match(lr, ref)
            times.append(time.perf_counter() - t)
    peak = peak_rss_mb()
    return {"method": "match", "lr": size, "ref": ref_side, "seconds": min(times), "peak_rss_mib": peak,
            "rss_over_import_mib": peak - base_rss, "zoom_median": float(m.zoom.median()),
            "gate_mean": float(m.gate.mean()),
            "mib_per_output_megapixel": (peak - base_rss) / (16 * size * size / 1e6)}


def _quality(photos: str | None, threads: int) -> dict:
    import torch
    from aware_restore.core.ssen import load_ssen, shipped_weights
    from aware_restore.core.ssen.loader import read_note
    from aware_restore.training.ssen import heldout
    from aware_restore.training.ssen.photos import find_photos, find_real_pairs

    torch.set_num_threads(threads)
    root = photos or find_photos()
    pairs = find_real_pairs()
    if root is None:
        raise SystemExit("held-out photos unavailable: give --photos DIR (training/ssen/photos.py)")
    model = load_ssen()
    t = time.perf_counter()
    res = heldout.evaluate(model, heldout.cases(heldout.holdout_images(root)))
    stereo = heldout.evaluate(model, heldout.stereo_cases(root))
    video = heldout.evaluate(model, heldout.video_cases(pairs)) if pairs else None
    aloe = heldout.evaluate(model, heldout.aloe_cases(pairs)) if pairs else None
    video = video if video and video["rows"] else None
    aloe = aloe if aloe and aloe["rows"] else None
    note = read_note(shipped_weights())
    return {"model": str(shipped_weights().name), "steps": note.get("steps", "?"), "photos": str(root),
            "seconds": round(time.perf_counter() - t, 1), "summary": heldout.summary(res),
            "table": heldout.table(res, stereo, video, aloe), "mean": res["mean"], "max_grid": res["max_grid"],
            "rows": res["rows"], "stereo": stereo["mean"], "video": video and video["mean"],
            "video_rows": video and video["rows"], "aloe": aloe and aloe["mean"], "aloe_rows": aloe and aloe["rows"]}


TILING_CASES = (("skimage_astronaut", 448, ((112, 16), (64, 16), (64, 32), (32, 16))),
                ("mate_Wood", 704, ((128, 16), (128, 32))))
SHIFT = 8  # HR px: the reference is the window 8 px up and left, so the target's content lies 8 px down-right


def _tiling(photos: str | None, threads: int) -> dict:
    """Tiled vs untiled SSEN output (8-bit levels, PSNR) on an HR square of held-out photos (at 32 px from the
    top-left corner), without a reference and with the window displaced by 8 HR px (2 LR px) as the reference."""
    import torch
    from aware_restore.core.ssen import load_ssen
    from aware_restore.core.ssen.infer import super_resolve
    from aware_restore.training.ssen.data import make_lr
    from aware_restore.training.ssen.heldout import holdout_images
    from aware_restore.training.ssen.metrics import psnr_y
    from aware_restore.training.ssen.photos import find_photos

    torch.set_num_threads(threads)
    images = holdout_images(photos or find_photos())
    model = load_ssen()
    rows = []
    for name, side, tiles in TILING_CASES:
        img = images[name][None]
        hr = img[..., 32:32 + side, 32:32 + side]
        lr = make_lr(hr)
        for mode in ("self", f"shift{SHIFT}"):
            ref = None if mode == "self" else img[..., 32 - SHIFT:32 - SHIFT + side, 32 - SHIFT:32 - SHIFT + side]
            whole = super_resolve(model, lr, ref)
            for tile, overlap in tiles:
                tiled = super_resolve(model, lr, ref, tile=tile, overlap=overlap)
                d = (tiled - whole).abs() * 255
                rows.append({"image": name, "lr": lr.shape[-1], "reference": mode, "tile": tile, "overlap": overlap,
                             "identical": bool(torch.equal(tiled, whole)), "mean_abs_levels": float(d.mean()),
                             "max_abs_levels": float(d.max()), "psnr_gt_untiled": psnr_y(whole, hr),
                             "psnr_gt_tiled": psnr_y(tiled, hr)})
    header = f"{'image':<18} {'LR':>4} {'ref':<7} {'tile/ovl':<9} {'mean lv':>8} {'max lv':>7} {'ΔPSNR vs GT':>12}"
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(f"{r['image']:<18} {r['lr']:>4} {r['reference']:<7} {str(r['tile']) + '/' + str(r['overlap']):<9} "
                     f"{r['mean_abs_levels']:>8.3f} {r['max_abs_levels']:>7.1f} "
                     f"{r['psnr_gt_tiled'] - r['psnr_gt_untiled']:>+12.3f}")
    return {"rows": rows, "table": "\n".join(lines)}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--photos", default=None, help="prepared SSEN photo set (default: find_photos())")
    ap.add_argument("--no-quality", action="store_true", help="skip the held-out quality table")
    ap.add_argument("--no-speed", action="store_true", help="skip the speed / memory table")
    ap.add_argument("--no-tiling", action="store_true", help="skip the tiled-vs-untiled audit")
    ap.add_argument("--no-match", action="store_true", help="skip the match time/memory at 512² with a 2048² ref")
    ap.add_argument("--case", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.device == "auto":
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.case:
        if args.case[0] == "match":
            res = _match_case(int(args.case[1]), MATCH_REF, args.threads, args.repeats, args.device)
        else:
            res = _case(args.case[0], int(args.case[1]), args.threads, args.repeats, args.device)
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    out_path = HERE / "results" / "ssen.json"
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result = {"family": "ssen", "device": args.device, "threads": args.threads, "repeats": args.repeats,
              "machine": platform.processor() or platform.machine(), "python": platform.python_version()}
    if not args.no_speed:
        rows = []
        for size in SIZES:
            for method in METHODS:
                rows.append(run_child([__file__, "--case", method, str(size), "--threads", str(args.threads),
                                       "--repeats", str(args.repeats), "--device", args.device]))
        header = f"{'method':<9} {'LR→SR':<12} {'seconds':>9} {'peak RSS MiB':>13} {'RSS over import':>16}"
        lines = [header, "-" * len(header)]
        for r in rows:
            lines.append(f"{r['method']:<9} {str(r['lr']) + '²→' + str(r['sr']) + '²':<12} {r['seconds']:>9.3f} "
                         f"{r['peak_rss_mib']:>13.0f} {r['rss_over_import_mib']:>16.0f}")
        sys.stdout.write("\n".join(lines) + "\n")
        result["rows"] = rows
        result["summary"] = {f"{r['method']}_{r['lr']}": round(r["seconds"], 3) for r in rows}
    else:
        result.update({k: previous[k] for k in ("rows", "summary") if k in previous})
    if not args.no_match:
        r = run_child([__file__, "--case", "match", str(MATCH_LR), "--threads", str(args.threads), "--repeats", "1",
                       "--device", args.device])
        sys.stdout.write(f"match {r['lr']}² input, {r['ref']}² reference: {r['seconds']:.1f} s, peak RSS "
                         f"{r['peak_rss_mib']:.0f} MiB ({r['rss_over_import_mib']:.0f} over import, "
                         f"{r['mib_per_output_megapixel']:.0f} MiB per output megapixel); chosen zoom "
                         f"{r['zoom_median']:.2f} (true 0.75), gate {r['gate_mean']:.2f}\n")
        result["match"] = r
    elif "match" in previous:
        result["match"] = previous["match"]
    if not args.no_quality:
        result["heldout"] = _quality(args.photos, args.threads)
        sys.stdout.write(result["heldout"]["table"] + "\n" + result["heldout"]["summary"] + "\n")
    elif "heldout" in previous:
        result["heldout"] = previous["heldout"]
    if not args.no_tiling:
        result["tiling"] = _tiling(args.photos, args.threads)
        sys.stdout.write(result["tiling"]["table"] + "\n")
    elif "tiling" in previous:
        result["tiling"] = previous["tiling"]
    (HERE / "results").mkdir(exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
