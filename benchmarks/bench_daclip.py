"""DA-CLIP image encoding (controller + controlled CLIP tower, preprocessing included) per image at batch 1 and 8,
text encoding of the ten degradation labels, and peak memory, with a REAL-SIZE ViT-B-32 DA-CLIP built from the
official key list (random weights drawn from a seeded generator; no download).

On CPU the peak is the process's peak RSS (``VmHWM``, reset before each case), weights included; on CUDA it is
``torch.cuda.max_memory_allocated`` (weights included). Prints a table and writes benchmarks/results/daclip.json.

    python benchmarks/bench_daclip.py [--device cpu|cuda] [--threads N] [--repeats K] [--size 512]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from _common import peak_mb, reset_peak

ROOT = Path(__file__).resolve().parent.parent
KEYS = ROOT / "tests" / "fixtures" / "daclip" / "daclip_keys_B32.txt"
RESULTS = ROOT / "benchmarks" / "results" / "daclip.json"


def build_model(device: str, seed: int = 0):
    import torch
    from aware_restore.core.checkpoint import meta_state_dict_from_key_list
    from aware_restore.core.daclip import (
        build_daclip,
        infer_config,
        inference_state_dict,
    )

    sd = inference_state_dict(meta_state_dict_from_key_list(KEYS))
    model = build_daclip(infer_config(sd), device="meta").to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(("ln_1.weight", "ln_2.weight", "ln_pre.weight", "ln_post.weight", "ln_final.weight")):
                p.fill_(1.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
    model.reset_buffers()
    return model.to(device).eval().requires_grad_(False)


def _time(fn, device: str, repeats: int) -> float:
    import torch

    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def run(device: str, repeats: int, size: int) -> dict:
    import torch
    from aware_restore.core.daclip import (
        DEGRADATIONS,
        encode_images,
        preprocess,
        text_features,
    )

    model = build_model(device)
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(1)
    results = []
    for batch in (1, 8):
        images = torch.rand(batch, 3, size, size, generator=g).to(device)
        pixels = preprocess(images, model.image_size)
        reset_peak(device)

        def encode(images=images):
            return encode_images(model, images, batch_size=8)

        total = _time(encode, device, repeats)
        peak = peak_mb(device)
        pre = _time(lambda images=images: preprocess(images, model.image_size), device, repeats)

        def towers(pixels=pixels):
            with torch.no_grad():
                return model.encode_image(pixels, control=True)

        net = _time(towers, device, repeats)
        results.append({"case": f"encode_b{batch}", "batch": batch, "image": f"{size}x{size}",
                        "ms_per_image": 1000 * total / batch, "model_ms_per_image": 1000 * net / batch,
                        "preprocess_ms_per_image": 1000 * pre / batch, "peak_mb": peak, "repeats": repeats})
    reset_peak(device)
    text_s = _time(lambda: text_features(model, list(DEGRADATIONS)), device, repeats)
    results.append({"case": "text_10_labels", "batch": 10, "ms_total": 1000 * text_s, "peak_mb": peak_mb(device),
                    "repeats": repeats})
    return {
        "device": device if device == "cpu" else torch.cuda.get_device_name(0),
        "threads": torch.get_num_threads(), "torch": torch.__version__, "machine": platform.machine(),
        "model": f"daclip {model.config.name}, {params / 1e6:.1f} M parameters (random weights, real shapes)",
        "dtype": "float32",
        "note": "ms_per_image includes preprocessing (resize + crop + normalise of the image size given); best of "
                "'repeats' runs after one warm-up; peak_mb = process peak RSS on CPU, max allocated on CUDA, "
                "weights included",
        "results": results,
        "summary": {r["case"]: round(r.get("ms_per_image", r.get("ms_total", 0.0)), 1) for r in results}
        | {"peak_mb_b8": round(results[1]["peak_mb"], 1)},
    }


def _table(report: dict) -> str:
    lines = [f"DA-CLIP {report['model']} on {report['device']} ({report['threads']} threads, {report['dtype']})",
             f"{'case':16} {'ms/image':>10} {'model ms/img':>13} {'preproc ms/img':>15} {'peak MB':>9}"]
    for r in report["results"]:
        if "ms_per_image" in r:
            lines.append(f"{r['case']:16} {r['ms_per_image']:10.1f} {r['model_ms_per_image']:13.1f} "
                         f"{r['preprocess_ms_per_image']:15.1f} {r['peak_mb']:9.0f}")
        else:
            lines.append(f"{r['case']:16} {r['ms_total']:10.1f} {'(total)':>13} {'':15} {r['peak_mb']:9.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--size", type=int, default=512, help="side of the square input images")
    parser.add_argument("--out", default=str(RESULTS))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    report = run(args.device, args.repeats, args.size)
    sys.stdout.write(_table(report) + "\n")
    out = Path(args.out)
    previous = json.loads(out.read_text()) if out.is_file() else {}
    runs = {k: v for k, v in previous.get("runs", {}).items() if k != report["device"]}
    runs[report["device"]] = report
    merged = report | {"runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2) + "\n")
    sys.stdout.write(f"wrote {out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
