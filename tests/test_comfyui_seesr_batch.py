"""SeeSR batches and output sizes in a REAL ComfyUI (issue 18 items 1-2; skipped unless COMFYUI_DIR / COMFYUI_NEW_DIR is set).

Uses the server of ``tests/test_comfyui_integration.py`` (``main.py --cpu`` with the tiny-model kit and the
SD-2 stand-in of ``kit.seesr.write_real``) and its helpers:

* ``seesr_x4`` on a batch of two different 32×40 images (two Load Image → core Batch Images) saves
  exactly 2 images at the library path's size; row i equals row i of the batch (image i, image i) (same latent row,
  noise row, prompt, embeddings and hint: nothing of the other image reaches it);
* ``seesr_x4`` at the official process size gives 100×100 → 400×400 and 101×75 → 404×300 (``plan_sizes``);
* ``tests/seesr_batch_probe.py`` (own process, ComfyUI imported) samples the same graph with core KSampler's
  ``common_ksampler`` and records every model call: the text rows and the RCA image context that latent row i gets
  are image i's prompt and DAPE embeddings.
"""

# ruff: noqa: F811  (``server`` is the integration module's fixture, imported so that pytest finds it here)
from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import ROOT, WORKFLOWS
from PIL import Image
from test_comfyui_integration import COMFYUIS, _ok, _pixels, seesr_fast, server  # noqa: F401

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUIS, reason="set COMFYUI_DIR and/or COMFYUI_NEW_DIR to ComfyUI checkouts")]


def _images(w: int, h: int):
    from seesr_batch_probe import batch_images

    x = batch_images(h, w)
    return [Image.fromarray((x[i].numpy() * 255).round().astype("uint8")) for i in range(x.shape[0])]


def _save(server, image, name: str) -> str:
    image.save(server["base"] / "input" / name)
    return name


def _seesr_x4(image: str, **fast) -> dict:
    wf = seesr_fast(json.loads((WORKFLOWS / "api" / "seesr_x4.json").read_text()), **fast)
    (load,) = [n for n in wf.values() if n["class_type"] == "LoadImage"]
    load["inputs"]["image"] = image
    return wf


def _seesr_x4_batch(first: str, second: str) -> dict:
    """``seesr_x4`` on a batch of two images: core Load Image ×2 → Batch Images (``ImageBatch``, in 0.3.64 and,
    deprecated but registered, in 0.33) → every node that read the Load Image."""
    wf = _seesr_x4(first)
    (load_id,) = [k for k, n in wf.items() if n["class_type"] == "LoadImage"]
    for node in wf.values():
        for name, value in node["inputs"].items():
            if value == [load_id, 0]:
                node["inputs"][name] = ["102", 0]
    wf["101"] = {"class_type": "LoadImage", "inputs": {"image": second}}
    wf["102"] = {"class_type": "ImageBatch", "inputs": {"image1": [load_id, 0], "image2": ["101", 0]}}
    return wf


def test_seesr_x4_batch_of_two_gives_two_images_each_its_own(server):
    from aware_restore.core.seesr import plan_sizes

    a, b = (_save(server, im, f"batch_{n}.png") for im, n in zip(_images(32, 40), "ab"))
    pngs = _ok(server, _seesr_x4_batch(a, b))
    assert len(pngs) == 2, f"{len(pngs)} images for a batch of 2"
    px = [_pixels(p) for p in pngs]
    final = plan_sizes(32, 40, 4, 64).final  # the library path's final size (process size 64 as seesr_fast sets)
    assert all(p.shape == (final[1], final[0], 3) for p in px), [p.shape for p in px]
    assert abs(px[0] - px[1]).mean() > 0.01
    aa = [_pixels(p) for p in _ok(server, _seesr_x4_batch(a, a))]
    bb = [_pixels(p) for p in _ok(server, _seesr_x4_batch(b, b))]
    d0, d1 = abs(px[0] - aa[0]).max(), abs(px[1] - bb[1]).max()
    other = abs(px[1] - aa[1]).mean()
    print(f"batch (a, b) vs (a, a) row 0: max abs {d0:.6f}; vs (b, b) row 1: max abs {d1:.6f}; "
          f"(a, b) row 1 vs (a, a) row 1 mean abs {other:.4f}")
    assert d0 <= 1 / 255 and d1 <= 1 / 255  # PNG rounding at most
    assert other > 0.01


@pytest.mark.parametrize("w,h", [(100, 100), (101, 75)])
def test_seesr_x4_gives_the_official_final_size(server, w, h):
    from aware_restore.core.seesr import plan_sizes

    wf = _seesr_x4(_save(server, _images(w, h)[0], f"lr_{w}x{h}.png"), steps=1, process_size=512)
    (png,) = _ok(server, wf)
    px = _pixels(png)
    plan = plan_sizes(w, h, 4, 512)  # the library path's plan (core/seesr/pipeline.py ends with to_final)
    print(f"{w}x{h}: processed {plan.process[0]}x{plan.process[1]}, saved {px.shape[1]}x{px.shape[0]}")
    assert plan.final == (4 * w, 4 * h) and px.shape == (4 * h, 4 * w, 3)


def test_probe_latent_row_i_gets_image_is_prompt_and_embeddings(server, tmp_path):
    out = tmp_path / "batch_probe.json"
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               PYTHONPATH=os.pathsep.join(p for p in (server["dir"], os.environ.get("PYTHONPATH")) if p))
    res = subprocess.run([server["python"], str(ROOT / "tests" / "seesr_batch_probe.py"),
                          "--models", str(server["seesr_cache"]), "--dape", str(server["base"] / "models" / "dape"),
                          "--out", str(out)], cwd=server["dir"], env=env, capture_output=True, text=True,
                         timeout=1800, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r = json.loads(out.read_text())
    print(json.dumps(r, indent=1))
    assert r["tags"][0] != r["tags"][1] and r["positive_rows"] == r["latent_rows"] == 2
    assert r["model_calls"] >= 2 and all(set(c) <= {0, 1} for c in r["calls_cond_or_uncond"])
    assert all(n == 2 * len(c) for n, c in zip(r["rows_per_call"], r["calls_cond_or_uncond"]))
    assert r["max_abs_row_vs_own_prompt"] <= 1e-6 and r["min_max_abs_row_vs_other_prompt"] > 1e-3
    assert r["max_abs_uncond_vs_negative"] <= 1e-6
    assert r["rca_calls"] > 0
    assert r["max_abs_rca_context_vs_own_embeds"] <= 1e-6 and r["min_max_abs_rca_context_vs_other_embeds"] > 1e-3
    assert r["outputs"] == 2 and r["output_size"] == r["library_final_size"] == [128, 160] and r["finite"]
