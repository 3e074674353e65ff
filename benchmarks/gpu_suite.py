"""Every family at real size (random weights, shapes from the official key lists / configs) in fp16 and bf16 on a
GPU: time per image or per step and peak memory, plus the large cases — IR-SDE one step at 1024² and 2048² in the
exact low-memory mode and SeeSR ×4 to 2048² (latent 256², tiles 96/32) — and SeeSR native in a real ComfyUI with
DynamicVRAM on and off (``--comfyui``, default ``$COMFYUI_NEW_DIR`` / ``$COMFYUI_DIR``; its Python is
``<checkout>/.venv/bin/python`` when present; skipped without a ComfyUI). Prints a table, writes
``benchmarks/results/gpu_suite_<device>.json``. Sized to finish within 8 minutes on one recent GPU.

    python benchmarks/gpu_suite.py                          # CUDA, fp16 + bf16, real sizes
    python benchmarks/gpu_suite.py --device cpu --quick     # the same code paths with tiny models (CI-sized)
    python benchmarks/gpu_suite.py --cases irsde_step,seesr_step --dtypes bf16

Times are medians of ``--repeats`` runs after one warm-up; a full IR-SDE restore is 100 steps, a SeeSR run
``steps`` steps (50 official, 2 turbo). Peak memory is ``torch.cuda.max_memory_allocated`` per case on CUDA and the
process's peak RSS (a high-water mark over all cases so far) on the CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
SEESR_DATA = ROOT / "core" / "seesr" / "data"
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


# ----------------------------------------------------------------------------------------------------- models
def _random(module: torch.nn.Module, device, dtype) -> torch.nn.Module:
    """Random weights of a sensible scale (fan-in normal), so activations stay finite in half precision."""
    g = torch.Generator(device="cpu").manual_seed(0)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan = p[0].numel() if p.ndim > 1 else 1
            if p.ndim > 1:
                p.copy_((torch.randn(p.shape, generator=g) / fan ** 0.5).to(p.dtype))
            elif name.endswith(("weight", ".g")):
                p.fill_(1.0)
            else:
                p.zero_()
    return module.to(device=device, dtype=dtype).eval().requires_grad_(False)


def _keys(rel: str) -> dict[str, torch.Tensor]:
    from aware_restore.core.checkpoint import meta_state_dict_from_key_list

    return meta_state_dict_from_key_list(FIX / rel)


def daclip_model(quick: bool, device, dtype):
    from aware_restore.core.daclip import DaclipConfig, build_daclip, infer_config
    from aware_restore.core.daclip.load import inference_state_dict

    cfg = (DaclipConfig(16, 64, 16, 64, 2, 4.0, 32, 2, 4.0, 77, 49408) if quick
           else infer_config(inference_state_dict(_keys("daclip/daclip_keys_B32.txt"))))
    model = _random(build_daclip(cfg, device="cpu"), device, dtype)
    model.reset_buffers()
    return model


def irsde_model(quick: bool, device, dtype):
    from aware_restore.core.irsde import UNetConfig, build_irsde, infer_config

    cfg = (UNetConfig(nf=32, ch_mult=(1, 2, 2), context_dim=32) if quick
           else infer_config(_keys("irsde/irsde_keys_universal-ir.txt")))
    return _random(build_irsde(cfg), device, dtype), cfg


def ram_model(quick: bool, device, dtype):
    from aware_restore.core.ram import RamConfig, SwinConfig, Tagger

    if quick:
        cfg = RamConfig(SwinConfig(8, (1, 1), (1, 2), 12, image_size=96), 4585, 512, 32, 1, 64)
    else:
        cfg = RamConfig.from_state_dict(_keys("ram/ram_swin_large_keys.txt"), 384)
    return _random(Tagger(cfg), device, dtype)


def seesr_models(quick: bool, device, dtype):
    from aware_restore.core.seesr import build_controlnet, build_unet

    if quick:
        ucfg = json.loads((FIX / "seesr" / "unet" / "config.json").read_text())
        ccfg = json.loads((FIX / "seesr" / "controlnet" / "config.json").read_text())
    else:
        ucfg = json.loads((SEESR_DATA / "unet_config.json").read_text())
        ccfg = json.loads((SEESR_DATA / "controlnet_config.json").read_text())
    unet = _random(build_unet(ucfg, device="cpu"), device, dtype)
    cn = _random(build_controlnet(ccfg, device="cpu"), device, dtype)
    return unet, cn, int(ucfg["cross_attention_dim"])


def ssen_model(paper: bool, quick: bool, device, dtype):
    from aware_restore.core.ssen import SSENConfig, SSENet, load_ssen

    if not paper:
        return load_ssen(None).to(device=device, dtype=dtype)
    cfg = SSENConfig(nf=16, n_pre=2, n_post=2) if quick else SSENConfig(nf=64, n_pre=8, n_post=8, est_nf=64)
    return _random(SSENet(cfg), device, dtype)


# ----------------------------------------------------------------------------------------------------- cases
def case_daclip(q, dev, dt):
    from aware_restore.core.daclip import encode_images

    model = daclip_model(q, dev, dt)
    images = torch.rand(2 if q else 8, 3, 256, 256, device=dev)
    return lambda: encode_images(model, images), images.shape[0], "image"


def case_irsde_step(size: int):
    def case(q, dev, dt):
        net, cfg = irsde_model(q, dev, dt)
        s = size // 32 if q else size
        x, mu = torch.rand(1, 3, s, s, device=dev, dtype=dt), torch.rand(1, 3, s, s, device=dev, dtype=dt)
        ctx = torch.randn(1, cfg.context_dim, device=dev, dtype=dt)
        if size <= 512:
            return (lambda: net(x, mu, 50, text_context=ctx, image_context=ctx)), 1, f"step {s}² whole"
        from aware_restore.core.irsde.lowmem import forward_lowmem

        tile = 16 if q else 512
        return (lambda: forward_lowmem(net, x, mu, 50, ctx, ctx, tile=tile)), 1, f"step {s}² exact, tile {tile}"
    return case


def case_ram(q, dev, dt):
    from aware_restore.core.ram import tag_images

    model = ram_model(q, dev, dt)
    images = torch.rand(4, 3, 480, 640, device=dev)
    return lambda: tag_images(model, images), images.shape[0], "image"


def _seesr_step(q, dev, dt, latent: int, tile: int | None):
    from aware_restore.core.seesr.sampler import (
        SamplerOptions,
        build_conditioning,
        predict_noise,
    )

    unet, cn, ctx_dim = seesr_models(q, dev, dt)
    h = w = latent
    text = torch.randn(1, 77, ctx_dim, device=dev, dtype=dt)
    embeds = torch.randn(1, 145, 512, device=dev, dtype=dt)
    cond_img = torch.rand(1, 3, 8 * h, 8 * w, device=dev, dtype=dt)
    c = build_conditioning(text, text, embeds, cond_img, 1, cfg=True)
    x = torch.randn(2, 4, h, w, device=dev, dtype=dt)
    opts = SamplerOptions(tile_size=tile, tile_overlap=(tile or 0) // 3)
    return lambda: predict_noise(unet, cn, x, 500, c, opts)


def case_seesr_step(q, dev, dt):
    lat = 8 if q else 64
    return _seesr_step(q, dev, dt, lat, None), 1, f"step, latent {lat}² (x4 to {8 * lat}²), CFG pair"


def case_seesr_x4_2048(q, dev, dt):
    lat, tile = (24, 16) if q else (256, 96)
    return _seesr_step(q, dev, dt, lat, tile), 1, f"step, latent {lat}² (x4 to {8 * lat}²), tiles {tile}/{tile // 3}"


COMFYUI: dict[str, str | None] = {"dir": None}  # set by main (--comfyui)


class Skipped(Exception):
    """A case that cannot run here (e.g. no ComfyUI given)."""


def case_seesr_native_dvram(mode: str):
    """SeeSR native (patched core MODEL + SeeSR ControlNet, one CFG denoiser call through comfy.samplers.sample) in
    a real ComfyUI, DynamicVRAM ``mode`` on/off, in a subprocess (benchmarks/seesr_native_dvram.py)."""
    def case(q, dev, dt):
        comfy_dir = COMFYUI["dir"]
        if not comfy_dir:
            raise Skipped("no ComfyUI (--comfyui / COMFYUI_NEW_DIR)")
        venv = Path(comfy_dir) / ".venv" / "bin" / "python"
        python = str(venv) if venv.exists() else sys.executable
        if q:  # the test kit's SD-2 checkpoint and SeeSR folder (reduced UNet, real CLIP/VAE widths), cached
            kit_env = dict(os.environ, PYTHONPATH=os.pathsep.join(
                p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p))
            found = subprocess.run([sys.executable, "-c", "from kit.seesr import real_models; print(real_models())"],
                                   env=kit_env, capture_output=True, text=True, check=True, timeout=1800)
            models, latent = Path(found.stdout.strip().splitlines()[-1]), 16
        else:
            models, latent = Path(os.environ.get("SEESR_MODELS", ROOT / "models")), 64
        name = {torch.float16: "fp16", torch.bfloat16: "bf16", torch.float32: "fp32"}[dt]
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (comfy_dir, os.environ.get("PYTHONPATH")) if p))
        cmd = [python, str(ROOT / "benchmarks" / "seesr_native_dvram.py"), "--comfy", comfy_dir, "--models",
               str(models), "--mode", mode, "--device", dev.type, "--dtype", name, "--latent", str(latent),
               "--repeats", "1" if q else "3"]

        def run():
            res = subprocess.run(cmd, cwd=comfy_dir, env=env, capture_output=True, text=True, timeout=1200,
                                 check=False)
            if res.returncode:
                raise RuntimeError(f"seesr_native_dvram.py failed: {(res.stdout + res.stderr)[-1500:]}")
            return json.loads(res.stdout.strip().splitlines()[-1])
        run.once = True  # the worker times its own repeats
        return run, 1, f"native CFG call, latent {latent}², DynamicVRAM {mode}"
    return case


def case_ssen(paper: bool):
    def case(q, dev, dt):
        from aware_restore.core.ssen.infer import super_resolve

        model = ssen_model(paper, q, dev, dt)
        s = 32 if q else 256
        lr = torch.rand(1, 3, s, s, device=dev)
        return (lambda: super_resolve(model, lr, None)), 1, f"{s}² → {4 * s}²"
    return case


CASES: dict[str, Callable] = {
    "daclip_encode": case_daclip,
    "irsde_step512": case_irsde_step(512),
    "irsde_step1024": case_irsde_step(1024),
    "irsde_step2048": case_irsde_step(2048),
    "ram_tag": case_ram,
    "seesr_step": case_seesr_step,
    "seesr_x4_2048": case_seesr_x4_2048,
    "ssen_shipped": case_ssen(False),
    "ssen_paper_size": case_ssen(True),
    "seesr_native_dvram_off": case_seesr_native_dvram("off"),
    "seesr_native_dvram_on": case_seesr_native_dvram("on"),
}


# ----------------------------------------------------------------------------------------------------- running
def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _peak_mb(dev: torch.device) -> float:
    if dev.type == "cuda":
        return torch.cuda.max_memory_allocated(dev) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_case(name: str, quick: bool, dev: torch.device, dtype: torch.dtype, repeats: int) -> dict:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    fn, per, what = CASES[name](quick, dev, dtype)
    build = time.perf_counter() - t0
    times = []
    with torch.inference_mode():
        for _ in range(1 if getattr(fn, "once", False) else repeats + 1):
            _sync(dev)
            t = time.perf_counter()
            out = fn()
            _sync(dev)
            times.append(time.perf_counter() - t)
    if isinstance(out, dict):  # a subprocess case reports its own numbers
        return {"case": name, "what": what, "dtype": str(dtype).replace("torch.", ""), "seconds": out["seconds"],
                "per": per, "seconds_per_item": out["seconds"] / per, "peak_mb": out["peak_mb"], "build_s": build,
                "finite": out["finite"], **{k: out[k] for k in ("dynamic_vram", "patcher") if k in out}}
    tensors = [out] if isinstance(out, torch.Tensor) else [v for v in getattr(out, "__dict__", {}).values()
                                                           if isinstance(v, torch.Tensor)]
    finite = all(bool(torch.isfinite(v.float()).all()) for v in tensors)
    med = statistics.median(times[1:])
    return {"case": name, "what": what, "dtype": str(dtype).replace("torch.", ""), "seconds": med,
            "per": per, "seconds_per_item": med / per, "peak_mb": _peak_mb(dev), "build_s": build, "finite": finite}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtypes", default=None, help="comma-separated from fp16,bf16,fp32 (default: fp16,bf16 on "
                                                   "CUDA, bf16 on the CPU)")
    ap.add_argument("--cases", default=",".join(CASES), help=f"comma-separated from {','.join(CASES)}")
    ap.add_argument("--quick", action="store_true", help="tiny models and inputs: the same code paths, CI-sized")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs per case (default 3; --quick: 1)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/gpu_suite_<device>.json)")
    ap.add_argument("--comfyui", default=os.environ.get("COMFYUI_NEW_DIR") or os.environ.get("COMFYUI_DIR"),
                    help="a ComfyUI checkout for the seesr_native_dvram cases (skipped without one)")
    args = ap.parse_args(argv)
    COMFYUI["dir"] = args.comfyui
    try:  # diffusers warns about casting whole models with .to(); the suite casts on purpose
        from diffusers.utils import logging as dlog

        dlog.set_verbosity_error()
    except ImportError:
        pass
    dev = torch.device(args.device)
    names = [n for n in args.cases.split(",") if n]
    unknown = [n for n in names if n not in CASES]
    if unknown:
        ap.error(f"unknown cases {unknown}")
    dtypes = (args.dtypes or ("fp16,bf16" if dev.type == "cuda" else "bf16")).split(",")
    repeats = args.repeats or (1 if args.quick else 3)
    torch.manual_seed(0)
    rows = []
    start = time.perf_counter()
    for dname in dtypes:
        for name in names:
            try:
                row = run_case(name, args.quick, dev, DTYPES[dname], repeats)
            except Skipped as exc:
                row = {"case": name, "dtype": dname, "skipped": str(exc)}
            except torch.OutOfMemoryError as exc:
                row = {"case": name, "dtype": dname, "error": f"out of memory: {str(exc).splitlines()[0]}"}
            except Exception as exc:  # noqa: BLE001 - a broken case is reported, the suite goes on
                row = {"case": name, "dtype": dname, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
            sys.stdout.write(_line(row) + "\n")
            sys.stdout.flush()
    total = time.perf_counter() - start
    device_name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu"
    result = {"device": device_name, "torch": torch.__version__, "quick": args.quick, "total_s": total,
              "threads": torch.get_num_threads(), "rows": rows}
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"gpu_suite_{dev.type}{'_quick' if args.quick else ''}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    sys.stdout.write(f"total {total:.1f} s on {device_name}; wrote {out}\n")
    return 1 if any("error" in r or not r.get("finite", True) for r in rows) else 0


def _line(r: dict) -> str:
    if "skipped" in r:
        return f"{r['case']:16} {r['dtype']:9} skipped: {r['skipped']}"
    if "error" in r:
        return f"{r['case']:16} {r['dtype']:9} ERROR {r['error'][:120]}"
    return (f"{r['case']:16} {r['dtype']:9} {r['seconds_per_item'] * 1000:10.1f} ms/{('image' if r['per'] > 1 or r['what'] == 'image' else 'call'):5}"
            f" peak {r['peak_mb']:8.0f} MB  {r['what']}{'' if r['finite'] else '  NON-FINITE'}")


if __name__ == "__main__":
    raise SystemExit(main())
