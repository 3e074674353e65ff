"""RAM Swin-L (+ DAPE) tagger at real size with random weights (shapes from the real key lists):

* tag time per 384-px image at batch 1 and 4 (``Tagger.tag`` on a 512×384 input, preprocessing included);
* load time and peak RSS of a real-size ``ram_swin_large_14m.pth``-style pickle (all 1042 keys, fp16, ≈1 GB)
  + DAPE.pth, against the converted inference-only fp16 safetensors (DAPE merged);
* conversion time;
* with ``--official DIR`` (a checkout of xinyu1205/recognize-anything; needs ``timm`` and ``scipy``): our Swin-L
  encoder against the official ``ram/models/swin_transformer.py`` with the same random weights (bias tables
  drawn too, loaded strictly into ours), 384², batch 1, interleaved rounds (official, ours, official, ...), median
  CPU (process) time and wall time per forward, and the output difference.

Each case runs in a fresh subprocess so its peak RSS is its own. The temporary files are deleted at the end.
Prints a table and writes benchmarks/results/ram.json.

    python benchmarks/bench_ram.py [--threads N] [--repeats N] [--device cpu|cuda] [--official DIR [--rounds N]]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import peak_rss_mb, run_child, sync

HERE = Path(__file__).resolve().parent
KEYS = HERE.parent / "tests" / "fixtures" / "ram"


def _random_sd(key_list: Path, dtype, seed: int) -> dict:
    """Random tensors with the listed shapes: weights ~ N(0, 1/fan_in), norms 1, biases 0, int buffers 0."""
    import torch
    from aware_restore.core.checkpoint import meta_state_dict_from_key_list

    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, m in meta_state_dict_from_key_list(key_list).items():
        if k.endswith(("relative_position_index", "position_ids")):
            out[k] = torch.zeros(m.shape, dtype=torch.int64)
        elif k.endswith("attn_mask"):
            out[k] = torch.zeros(m.shape, dtype=dtype)
        elif m.ndim >= 2 or k == "label_embed":
            fan_in = m[0].numel() if m.ndim >= 2 else 1
            std = 0.02 if "relative_position_bias_table" in k else (1.0 if k == "label_embed" else fan_in ** -0.5)
            out[k] = (torch.randn(m.shape, generator=g) * std).to(dtype)
        elif k.endswith(("LayerNorm.weight", "norm.weight", "norm1.weight", "norm2.weight")):
            out[k] = torch.ones(m.shape, dtype=dtype)
        else:
            out[k] = torch.zeros(m.shape, dtype=dtype)
    return out


def case_tag(batch: int, repeats: int, device: str) -> dict:
    import torch
    from aware_restore.core.ram import build_tagger
    from aware_restore.core.ram.keys import split_ram

    weights, _, _ = split_ram(_random_sd(KEYS / "ram_swin_large_keys.txt", torch.float32, 0))
    dtype = torch.float16 if device == "cuda" else torch.float32
    model = build_tagger({k: v.to(dtype) for k, v in weights.items()}).to(device)
    del weights
    images = torch.rand(batch, 3, 384, 512, generator=torch.Generator().manual_seed(1)).to(device)
    model.tag(images)  # warm-up
    times = []
    for _ in range(repeats):
        sync(device)
        t = time.perf_counter()
        tags = model.tag(images)
        sync(device)
        times.append(time.perf_counter() - t)
    assert len(tags) == batch
    res = {"case": f"tag_b{batch}", "batch": batch, "dtype": str(dtype).removeprefix("torch."),
           "seconds_per_image": min(times) / batch, "peak_rss_mib": peak_rss_mb()}
    if device == "cuda":
        res["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2 ** 20
    return res


def case_load(ram: str, dape: str | None) -> dict:
    import torch
    from aware_restore.core.ram import load_tagger

    t = time.perf_counter()
    model = load_tagger(ram, dape or None, dtype=torch.float32)
    seconds = time.perf_counter() - t
    return {"case": "load_" + Path(ram).suffix.lstrip("."), "file": Path(ram).name,
            "file_mib": Path(ram).stat().st_size / 2 ** 20, "seconds": seconds, "peak_rss_mib": peak_rss_mb(),
            "params_m": sum(p.numel() for p in model.parameters()) / 1e6}


def case_write(folder: str) -> dict:
    import torch
    from aware_restore.core.ram import convert

    folder_p = Path(folder)
    sd = _random_sd(KEYS / "ram_swin_large_keys.txt", torch.float16, 0)
    torch.save({"model": sd}, folder_p / "ram_swin_large_14m.pth")
    lora = _random_sd(KEYS / "dape_keys.txt", torch.float32, 2)
    lora = {k: v * 0.01 for k, v in lora.items()}
    torch.save(lora, folder_p / "DAPE.pth")
    del sd
    t = time.perf_counter()
    convert(folder_p / "ram_swin_large_14m.pth", folder_p / "ram_dape.safetensors", dape=folder_p / "DAPE.pth")
    return {"case": "convert", "seconds": time.perf_counter() - t, "peak_rss_mib": peak_rss_mb(),
            "output_mib": (folder_p / "ram_dape.safetensors").stat().st_size / 2 ** 20}


def case_official(checkout: str, rounds: int) -> dict:
    """Interleaved forward timing of our Swin-L encoder and the official one on the same weights (CPU)."""
    import importlib.util
    import statistics

    import torch
    from aware_restore.core.ram.swin import SwinConfig, SwinTransformer

    src = Path(checkout) / "ram" / "models" / "swin_transformer.py"
    spec = importlib.util.spec_from_file_location("official_ram_swin", src)
    if spec is None or not src.is_file():
        raise SystemExit(f"--official: {src} not found (give a recognize-anything checkout)")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    official = mod.SwinTransformer(img_size=384, patch_size=4, in_chans=3, embed_dim=192, depths=[2, 2, 18, 2],
                                   num_heads=[6, 12, 24, 48], window_size=12, mlp_ratio=4.0, qkv_bias=True,
                                   drop_rate=0.0, drop_path_rate=0.1, ape=False, patch_norm=True).eval()
    with torch.no_grad():  # non-trivial weights: the bias tables and norms matter
        for name, t in official.named_parameters():
            if "relative_position_bias_table" in name:
                t.normal_(0, 1.0)
            elif t.ndim == 1:
                t.normal_(0, 0.05).add_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
    sd = {k: v for k, v in official.state_dict().items() if not k.endswith(("relative_position_index", "attn_mask"))}
    ours = SwinTransformer(SwinConfig(192, (2, 2, 18, 2), (6, 12, 24, 48), 12, image_size=384)).eval()
    ours.load_state_dict(sd, strict=True)
    x = torch.rand(1, 3, 384, 384, generator=torch.Generator().manual_seed(1))
    models = {"official": official, "ours": ours}
    cpu = {n: [] for n in models}
    wall = {n: [] for n in models}
    with torch.no_grad():
        diff = float((ours(x) - official(x)).abs().max())
        for _ in range(rounds):
            for n, m in models.items():
                t, c = time.perf_counter(), time.process_time()
                m(x)
                wall[n].append(time.perf_counter() - t)
                cpu[n].append(time.process_time() - c)
    med = {f"{k}_{n}": statistics.median(v[n]) for k, v in (("cpu", cpu), ("wall", wall)) for n in models}
    return {"case": "swin_vs_official", "rounds": rounds, "max_abs_diff": diff, **med,
            "cpu_ratio": med["cpu_ours"] / med["cpu_official"], "wall_ratio": med["wall_ours"] / med["wall_official"],
            "cpu_official_runs": cpu["official"], "cpu_ours_runs": cpu["ours"]}


def _sub(args: list[str], threads: int, device: str) -> dict:
    return run_child([__file__, "--threads", str(threads), "--device", device, "--case", *args])


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--skip-load", action="store_true", help="only the tagging times")
    ap.add_argument("--official", default=None, help="recognize-anything checkout: time against its Swin-L")
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds for --official")
    ap.add_argument("--only-official", action="store_true", help="only the --official comparison")
    ap.add_argument("--case", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    import torch

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(args.threads)
    if args.case:
        kind, *rest = args.case
        res = {"tag": lambda: case_tag(int(rest[0]), args.repeats, args.device),
               "load": lambda: case_load(rest[0], rest[1] if len(rest) > 1 else None),
               "write": lambda: case_write(rest[0]),
               "official": lambda: case_official(rest[0], int(rest[1]))}[kind]()
        sys.stdout.write(json.dumps(res) + "\n")
        return 0
    out_path = HERE / "results" / "ram.json"
    previous = json.loads(out_path.read_text()) if out_path.is_file() else {}
    vs_official = previous.get("vs_official")
    if args.official:
        vs_official = _sub(["official", args.official, str(args.rounds)], args.threads, "cpu")
        sys.stdout.write(f"Swin-L encoder 384², {args.threads} thread(s), {args.rounds} interleaved rounds: CPU "
                         f"{vs_official['cpu_ours']:.2f} s vs official {vs_official['cpu_official']:.2f} s = "
                         f"{vs_official['cpu_ratio']:.3f}× (wall {vs_official['wall_ratio']:.3f}×), max |Δ| "
                         f"{vs_official['max_abs_diff']:.1e}\n")
    if args.only_official:
        if previous:
            previous["vs_official"] = vs_official
            out_path.write_text(json.dumps(previous, indent=1) + "\n")
        return 0
    rows = [_sub(["tag", str(b)], args.threads, args.device) for b in (1, 4)]
    if not args.skip_load:
        tmp = Path(tempfile.mkdtemp(prefix="bench_ram_"))
        try:
            rows.append(_sub(["write", str(tmp)], args.threads, "cpu"))
            rows.append(_sub(["load", str(tmp / "ram_swin_large_14m.pth"), str(tmp / "DAPE.pth")], args.threads,
                             "cpu"))
            rows.append(_sub(["load", str(tmp / "ram_dape.safetensors")], args.threads, "cpu"))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    header = f"{'case':<16} {'seconds':>10} {'peak RSS MiB':>13}  note"
    lines = [header, "-" * len(header)]
    for r in rows:
        secs = r.get("seconds_per_image", r.get("seconds"))
        note = {"tag_b1": "per image, batch 1", "tag_b4": "per image, batch 4"}.get(r["case"], "")
        if "file_mib" in r:
            note = f"{r['file']} ({r['file_mib']:.0f} MiB)"
        if r["case"] == "convert":
            note = f"pickle + DAPE -> fp16 safetensors ({r['output_mib']:.0f} MiB)"
        lines.append(f"{r['case']:<16} {secs:>10.3f} {r['peak_rss_mib']:>13.0f}  {note}")
    sys.stdout.write("\n".join(lines) + "\n")
    summary = {r["case"]: round(r.get("seconds_per_image", r.get("seconds")), 3) for r in rows}
    result = {"family": "ram", "device": args.device, "threads": args.threads, "repeats": args.repeats,
              "machine": platform.processor() or platform.machine(), "python": platform.python_version(),
              "torch": torch.__version__, "rows": rows, "summary": summary}
    if vs_official:
        result["vs_official"] = vs_official
    (HERE / "results").mkdir(exist_ok=True)
    out_path.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
