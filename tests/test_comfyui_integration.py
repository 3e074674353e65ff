"""End-to-end test in REAL ComfyUIs: every test runs once per checkout given — ``COMFYUI_DIR`` (e.g. 0.3.64) and
``COMFYUI_NEW_DIR`` (e.g. 0.33 with DynamicVRAM and the new sampler helpers); skipped when neither is set. Each
ComfyUI runs with its own Python: ``<checkout>/.venv/bin/python`` when present (override with ``COMFYUI_PYTHON`` /
``COMFYUI_NEW_PYTHON``), else this interpreter.

Starts ``main.py --cpu`` on a free loopback port with an extra-model-paths YAML whose ``custom_nodes`` entry
holds this checkout (under another folder name) and whose model folders hold the tiny-model kit plus the SeeSR
test models a real ComfyUI loads (``kit.seesr.write_real``: a random SD-2 checkpoint with a reduced UNet and the
full CLIP/VAE, an SD-2-width SeeSR folder, a LoRA; ≈1 GiB, cached outside the repo); fails on import errors in
the log; checks that ``/object_info`` lists every node with the inputs/outputs the test double reports; submits
every API workflow (SeeSR ones with fewer steps and a smaller process size, patched here, not in the shipped files)
with ``POST /prompt`` and polls ``/history`` for success and outputs. The SeeSR native path is also measured against
the diffusers path (``tests/seesr_comfy_probe.py``), run with four core samplers, behind a LoRA loader and FreeU,
interrupted and re-run, and tiled vs untiled. See CONTRIBUTING.md for the recipe.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest
from conftest import INPUT_IMAGES, ROOT, WORKFLOWS, make_test_image
from PIL import Image

COMFYUIS = {name: os.environ[name] for name in ("COMFYUI_DIR", "COMFYUI_NEW_DIR") if os.environ.get(name)}
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUIS, reason="set COMFYUI_DIR and/or COMFYUI_NEW_DIR to ComfyUI checkouts")]

LOG_FAILURES = ("IMPORT FAILED", "Traceback (most recent call last)", "Error while calling comfy_entrypoint",
                "Cannot import", "did not return")
NEWEST = "COMFYUI_NEW_DIR" if "COMFYUI_NEW_DIR" in COMFYUIS else "COMFYUI_DIR"  # the double follows this one
SEESR_OUTPUTS: dict[tuple[str, str], bytes] = {}  # (ComfyUI, workflow/run name) -> saved PNG bytes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 10):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


def _post(url: str, payload: dict):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"POST {url} failed: {exc.code} {exc.read().decode()[:2000]}") from None


def _python(which: str, comfy_dir: str) -> str:
    override = os.environ.get(which.replace("_DIR", "_PYTHON"))
    venv = os.path.join(comfy_dir, ".venv", "bin", "python")
    return override or (venv if os.path.exists(venv) else sys.executable)


@pytest.fixture(scope="module", params=sorted(COMFYUIS))
def server(request, tmp_path_factory):
    from kit import build_models_tree

    which = request.param
    comfy_dir = COMFYUIS[which]
    python = _python(which, comfy_dir)
    from kit import seesr as seesr_kit

    base = tmp_path_factory.mktemp("real_comfyui")
    models = base / "models"
    build_models_tree(models)
    cache = seesr_kit.write_real(models)  # the SD-2 checkpoint(s), SeeSR folder and LoRA a real ComfyUI loads
    custom = base / "custom_nodes"
    custom.mkdir()
    (custom / "AwareRestore-integration").symlink_to(ROOT, target_is_directory=True)
    for d in ("input", "output", "temp", "user"):
        (base / d).mkdir()
    for name, (h, w, seed, c) in INPUT_IMAGES.items():
        Image.fromarray(make_test_image(h, w, seed, c)).save(base / "input" / name)
    folders = ["daclip", "irsde", "dape", "seesr", "ssen", "checkpoints", "vae", "diffusers", "loras"]
    yaml = ["aware_restore_integration:", f"  base_path: {base}", "  custom_nodes: custom_nodes"]
    yaml += [f"  {f}: models/{f}" for f in folders]
    (base / "extra_model_paths.yaml").write_text("\n".join(yaml) + "\n")
    port = _free_port()
    log_path = base / "comfyui.log"
    cmd = [python, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(base / "extra_model_paths.yaml"),
           "--input-directory", str(base / "input"), "--output-directory", str(base / "output"),
           "--temp-directory", str(base / "temp"), "--user-directory", str(base / "user"),
           "--database-url", "sqlite:///:memory:", "--disable-auto-launch"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 240
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ComfyUI exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                _get(url + "/system_stats", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.time() > deadline:
                    pytest.fail("ComfyUI did not start in 240 s:\n" + log_path.read_text()[-4000:])
                time.sleep(1)
        version = _get(url + "/system_stats").get("system", {}).get("comfyui_version")
        print(f"{which}: ComfyUI {version} at {comfy_dir} ({python})")
        yield {"url": url, "log": log_path, "base": base, "seesr_cache": cache, "which": which, "dir": comfy_dir,
               "python": python, "version": version}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def _our_log_lines(log_text: str) -> list[str]:
    """Failure lines that concern this pack (ComfyUI's own optional extras may fail for missing deps)."""
    lines = log_text.splitlines()
    ours = ("AwareRestore-integration", str(ROOT))
    bad = []
    for i, ln in enumerate(lines):
        if not any(f in ln for f in LOG_FAILURES):
            continue
        block = ln
        if ln.startswith("Traceback"):
            end = next((j for j in range(i + 1, min(i + 60, len(lines))) if lines[j].startswith(
                ("Cannot import", "Traceback", "Error while"))), min(i + 60, len(lines)) - 1)
            block = "\n".join(lines[i:end + 1])
        if any(o in block for o in ours):
            bad.append(block)
    return bad


def test_pack_imports_cleanly(server):
    text = server["log"].read_text()
    assert "AwareRestore-integration" in text, "the pack was not loaded:\n" + text[-3000:]
    bad = _our_log_lines(text)
    assert not bad, "\n".join(bad) + "\n---\n" + text[-4000:]


def test_web_extension_is_served(server):
    with urllib.request.urlopen(server["url"] + "/extensions/AwareRestore-integration/js/show_text.js",
                                timeout=10) as r:
        assert r.status == 200 and b"AwareRestore.ShowText" in r.read()
    assert any("AwareRestore-integration" in e for e in _get(server["url"] + "/extensions"))


def test_frontend_shows_node_text(server):
    """In a headless Chromium (when playwright and a chromium are installed): a node's ui text appears on it."""
    sync_api = pytest.importorskip("playwright.sync_api")
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium executable")
    target = server["base"] / "models" / "daclip" / "wild-daclip_ViT-L-14.pt"  # not written by the tiny kit
    assert not target.exists()
    target.parent.mkdir(parents=True, exist_ok=True)
    import torch

    torch.save({"placeholder": torch.zeros(1)}, target)  # a readable file: ARDownloadModel returns its path
    api = {"1": {"class_type": "ARDownloadModel", "inputs": {"file": "wild-daclip_ViT-L-14.pt"}}}
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        try:
            page = browser.new_page()
            errors = []
            page.on("console", lambda m: errors.append(m.text) if "AwareRestore" in m.text else None)
            page.goto(server["url"])
            page.wait_for_function("window.app && window.app.graph", timeout=90000)
            page.wait_for_timeout(2000)  # let the app finish its own start-up graph before replacing it
            page.evaluate("(api) => window.app.loadApiJson(api, 'aware-restore-test')", api)
            page.wait_for_function("() => window.app.graph._nodes.length === 1", timeout=30000)
            page.evaluate("() => window.app.queuePrompt(0)")
            page.wait_for_function("() => (window.app.graph._nodes[0].widgets || [])"
                                   ".some(w => w.name === 'aware_restore_text' && w.value)", timeout=60000)
            value = page.evaluate("() => window.app.graph._nodes[0].widgets"
                                  ".find(w => w.name === 'aware_restore_text').value")
        finally:
            browser.close()
            target.unlink()
    assert value == str(target) and not errors, errors


def test_object_info_matches_the_double(server, comfy_env):
    info = _get(server["url"] + "/object_info", timeout=60)
    for node_id, cls in comfy_env.node_classes.items():
        assert node_id in info, f"{node_id} missing from the real /object_info"
        real, ours = info[node_id], cls.GET_NODE_INFO_V1()
        for key in ("output", "output_is_list", "output_name", "output_tooltips", "category", "display_name",
                    "output_node", "input_order"):
            assert real[key] == json.loads(json.dumps(ours[key])), (node_id, key, real[key], ours[key])
        for section in ("required", "optional"):
            r, o = real["input"].get(section, {}), json.loads(json.dumps(ours["input"].get(section, {})))
            assert set(r) == set(o), (node_id, section)
            for name in r:
                assert r[name][0] == o[name][0], (node_id, name, r[name][0], o[name][0])
                for opt in ("tooltip", "default", "min", "max", "multiline"):
                    assert r[name][1].get(opt) == o[name][1].get(opt), (node_id, name, opt)
                if "options" in r[name][1]:
                    assert r[name][1]["options"] == o[name][1]["options"], (node_id, name)


def _run(server, workflow: dict, timeout: float = 600) -> dict:
    res = _post(server["url"] + "/prompt", {"prompt": workflow, "client_id": str(uuid.uuid4())})
    assert not res.get("node_errors"), res
    pid = res["prompt_id"]
    deadline = time.time() + timeout
    while time.time() < deadline:
        hist = _get(f"{server['url']}/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            return hist[pid]
        time.sleep(0.5)
    pytest.fail(f"prompt did not finish in {timeout} s:\n" + server["log"].read_text()[-4000:])


def seesr_fast(wf: dict, steps: int = 2, process_size: int = 64, upscale: int | None = None, tile: int = 16,
               overlap: int = 8) -> dict:
    """A SeeSR API workflow made CPU-sized: fewer steps, a small process size, small latent tiles."""
    for node in wf.values():
        ct, inp = node["class_type"], node["inputs"]
        if ct == "KSampler":
            inp["steps"] = min(inp["steps"], steps)
        elif ct == "SeeSRLREmbedding":
            inp["process_size"] = process_size
            if upscale is not None:
                inp["upscale"] = upscale
        elif ct == "SeeSRTiledSampling":
            inp["tile_size"], inp["tile_overlap"] = tile, overlap
    return wf


def _saved_images(server, hist: dict) -> list[bytes]:
    out = []
    for node_out in hist["outputs"].values():
        for img in node_out.get("images", []):
            if img.get("type") == "output":
                path = server["base"] / "output" / img.get("subfolder", "") / img["filename"]
                assert path.exists(), path
                out.append(path.read_bytes())
    return out


def _ok(server, wf: dict, timeout: float = 900) -> list[bytes]:
    hist = _run(server, wf, timeout)
    status = hist["status"]
    assert status["status_str"] == "success", json.dumps(status.get("messages"), indent=1)[-4000:]
    assert hist["outputs"], "no outputs"
    return _saved_images(server, hist)


@pytest.mark.parametrize("name", sorted(p.name for p in (WORKFLOWS / "api").glob("*.json")))
def test_api_workflow_runs_in_real_comfyui(server, name):
    wf = json.loads((WORKFLOWS / "api" / name).read_text())
    if name.startswith("seesr"):
        wf = seesr_fast(wf)
    images = _ok(server, wf)
    if name.startswith("seesr"):
        assert len(images) == 1
        SEESR_OUTPUTS[server["which"], name] = images[0]


# ----------------------------------------------------------------------------------------------- SeeSR native
def _pixels(png: bytes):
    import io

    import numpy as np

    return np.asarray(Image.open(io.BytesIO(png))).astype(np.float64) / 255.0


def _seesr_small(**kw) -> dict:
    """The native ×4 graph at ×2 with process size 64 (latent 12×16), 2 steps: the cheap variant for many runs."""
    wf = seesr_fast(json.loads((WORKFLOWS / "api" / "seesr_x4.json").read_text()), upscale=2)
    for node in wf.values():
        if node["class_type"] == "KSampler":
            node["inputs"].update(kw)
    return wf


def test_seesr_native_matches_the_diffusers_path(server, tmp_path):
    """One denoiser call: native (patched core MODEL, ComfyUI ControlNet, comfy.samplers.sample) vs the library's
    diffusers UNet + ControlNet with the same weights, latent, sigma and embeddings; ≤ 1e-4 fp32 for cond, uncond
    and the CFG result (cfg 5.5), with/without control and tiles, for a batch of 2 different images (row i with
    image i's embeddings) and, where the core has DynamicVRAM's lazy comfy.ops, with the RCA blocks built that way."""
    out = tmp_path / "probe.json"
    path = os.pathsep.join(p for p in (server["dir"], os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"), PYTHONPATH=path)
    res = subprocess.run([server["python"], str(ROOT / "tests" / "seesr_comfy_probe.py"), "--comfy", server["dir"],
                          "--models", str(server["seesr_cache"]), "--out", str(out)], cwd=server["dir"], env=env,
                         capture_output=True, text=True, timeout=1800, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    report = json.loads(out.read_text())
    print(json.dumps(report, indent=1))
    assert report["model_config"] == "SD20" and report["model_type"] == "EPS"
    for name, r in report["cases"].items():
        for key in ("max_abs_eps_cond", "max_abs_eps_uncond", "max_abs_eps_cfg"):
            assert r[key] <= 1e-4, (name, key, r)
        if r["start_point_err"] is not None:
            assert r["start_point_err"] <= 1e-5, (name, r)
    assert report["cases"]["control"]["rca_effect_max_abs_eps"] > 0.1  # RCA matters: the comparison is not vacuous
    for name in ("batch2_rows", "batch2_rows_tiled"):  # the rows matter: image 1's embeddings are far from row 0's
        assert report["cases"][name]["row0_vs_row1_embeds_max_abs_eps"] > 1e-2, report["cases"][name]
    lazy = report["dynamic_loading"]
    if lazy["core_has_lazy_ops"]:
        assert "dynamic_loading" in report["cases"] and lazy["built_lazily"] == lazy["linear_layers"] > 0, lazy


@pytest.mark.parametrize("sampler", ["euler", "dpmpp_2m", "ddim", "uni_pc"])
def test_seesr_native_runs_with_core_samplers(server, sampler):
    # 3 steps: with 2, euler, ddim (ComfyUI's ddim is Euler) and dpmpp_2m (first order on its first and last step)
    # coincide
    (png,) = _ok(server, _seesr_small(sampler_name=sampler, scheduler="normal", seed=3, steps=3))
    px = _pixels(png)
    which = server["which"]
    SEESR_OUTPUTS[which, f"sampler_{sampler}"] = png
    others = {k: round(abs(_pixels(v) - px).mean(), 6) for (w, k), v in SEESR_OUTPUTS.items()
              if w == which and k.startswith("sampler_")}
    print(f"{sampler}: image std {px.std():.4f}; mean abs vs {others}")
    assert px.shape == (96, 128, 3) and 0.02 < px.std()
    if sampler == "uni_pc":
        assert others["sampler_dpmpp_2m"] > 0 and others["sampler_euler"] > 0


def _insert_before_apply(wf: dict, node_id: str, node: dict, takes_clip: bool) -> dict:
    wf[node_id] = node
    for other in wf.values():
        if other["class_type"] == "SeeSRApply":
            other["inputs"]["model"] = [node_id, 0]
        if takes_clip and other["class_type"] in ("CLIPTextEncode", "SeeSRTextEncode"):
            other["inputs"]["clip"] = [node_id, 1]
    return wf


@pytest.mark.parametrize("patch", ["lora", "freeu"])
def test_seesr_native_after_lora_or_freeu(server, patch):
    from kit.seesr import LORA_NAME

    base = SEESR_OUTPUTS.get((server["which"], "sampler_euler"))
    if base is None:
        base = _ok(server, _seesr_small(sampler_name="euler", scheduler="normal", seed=3, steps=3))[0]
    wf = _seesr_small(sampler_name="euler", scheduler="normal", seed=3, steps=3)
    if patch == "lora":
        node = {"class_type": "LoraLoader", "inputs": {"model": ["2", 0], "clip": ["2", 1], "lora_name": LORA_NAME,
                                                        "strength_model": 1.0, "strength_clip": 1.0}}
    else:
        node = {"class_type": "FreeU_V2", "inputs": {"model": ["2", 0], "b1": 1.3, "b2": 1.4, "s1": 0.9, "s2": 0.2}}
    (png,) = _ok(server, _insert_before_apply(wf, "100", node, patch == "lora"))
    diff = abs(_pixels(png) - _pixels(base)).mean()
    print(f"{patch} before SeeSR Apply: mean abs image change {diff:.6f}")
    assert diff > 1e-3, f"{patch} had no effect ({diff})"
    assert "lora key not loaded" not in server["log"].read_text()


def test_seesr_interrupt_and_rerun_gives_the_same_image(server):
    websocket = pytest.importorskip("websocket")
    ref = _ok(server, _seesr_small(seed=11, steps=3))[0]
    other = _ok(server, _seesr_small(seed=12, steps=3))[0]  # evicts the seed-11 KSampler from ComfyUI's cache
    assert ref != other
    client = str(uuid.uuid4())
    ws = websocket.create_connection(server["url"].replace("http", "ws") + f"/ws?clientId={client}", timeout=600)
    try:
        res = _post(server["url"] + "/prompt", {"prompt": _seesr_small(seed=11, steps=3), "client_id": client})
        pid = res["prompt_id"]
        while True:
            msg = ws.recv()
            if not isinstance(msg, str):
                continue
            m = json.loads(msg)
            data = m.get("data", {})
            if m.get("type") == "progress" and data.get("node") == "11" and data.get("value", 0) >= 1:
                req = urllib.request.Request(server["url"] + "/interrupt", data=b"{}", method="POST",
                                             headers={"Content-Type": "application/json"})
                urllib.request.urlopen(req, timeout=30).close()  # answers 200 with an empty body
                break
            if m.get("type") in ("execution_success", "execution_error") and data.get("prompt_id") == pid:
                pytest.fail(f"the run ended before it could be interrupted: {m}")
    finally:
        ws.close()
    deadline = time.time() + 600
    while time.time() < deadline:
        hist = _get(f"{server['url']}/history/{pid}")
        if pid in hist and hist[pid].get("status", {}).get("completed") is not None:
            break
        time.sleep(0.5)
    msgs = [m[0] for m in hist[pid]["status"].get("messages", [])]
    assert hist[pid]["status"]["status_str"] == "error" and "execution_interrupted" in msgs, msgs
    again = _ok(server, _seesr_small(seed=11, steps=3))[0]
    print(f"interrupt: re-run == uninterrupted run: {again == ref}; seed 12 vs 11 mean abs "
          f"{abs(_pixels(other) - _pixels(ref)).mean():.6f}")
    assert again == ref, "the re-run after an interrupt differs from the uninterrupted run"


@pytest.mark.parametrize("tile", [32, 16])
def test_seesr_tiled_vs_untiled(server, tile):
    """Same seed and settings, latent 24×32: tile 32 covers it in one tile (the wrapper passes through: the same
    pixels); tile 16 gives 6 tiles (a different computation: its mean difference is measured and printed)."""
    untiled = SEESR_OUTPUTS.get((server["which"], "seesr_x4.json"))
    if untiled is None:
        untiled = _ok(server, seesr_fast(json.loads((WORKFLOWS / "api" / "seesr_x4.json").read_text())))[0]
    wf = seesr_fast(json.loads((WORKFLOWS / "api" / "seesr_x4.json").read_text()))
    wf["100"] = {"class_type": "SeeSRTiledSampling", "inputs": {"model": ["10", 0], "tile_size": tile,
                                                               "tile_overlap": 8}}
    wf["11"]["inputs"]["model"] = ["100", 0]
    (png,) = _ok(server, wf)
    diff = abs(_pixels(png) - _pixels(untiled))
    print(f"tile {tile}: mean abs {diff.mean():.6f}, max abs {diff.max():.6f} (image in [0,1])")
    if tile == 32:
        assert diff.max() == 0  # pixels identical (the PNGs differ only in the embedded prompt)
    else:
        assert 0 < diff.mean() < 0.25


def test_double_core_nodes_match_comfyui(server):
    """The core nodes the test double provides (to build and validate the example workflows) have the real inputs,
    types and defaults; the workflows' combo values are real options."""
    from core_nodes import core_nodes

    info = _get(server["url"] + "/object_info", timeout=60)
    for cls in core_nodes():
        ours = cls.GET_NODE_INFO_V1()
        node_id = cls.GET_SCHEMA().node_id
        real = info[node_id]
        if server["which"] == NEWEST:
            assert real["output"] == ours["output"], node_id
        else:  # an older core: the double (which follows the newest) may add outputs after the real ones
            assert ours["output"][:len(real["output"])] == real["output"], node_id
        for section in ("required", "optional"):
            r, o = real["input"].get(section, {}), json.loads(json.dumps(ours["input"].get(section, {})))
            assert set(r) == set(o), (node_id, section, set(r) ^ set(o))
            for name in r:
                rt = r[name][0] if not isinstance(r[name][0], list) else "COMBO"
                ot = o[name][0] if not isinstance(o[name][0], list) else "COMBO"
                assert rt == ot, (node_id, name, rt, ot)
                for opt in ("default", "min", "max"):
                    if len(r[name]) > 1 and len(o[name]) > 1 and opt in r[name][1] and opt in o[name][1]:
                        assert r[name][1][opt] == o[name][1][opt], (node_id, name, opt)
    for path in (WORKFLOWS / "api").glob("*.json"):
        for node in json.loads(path.read_text()).values():
            real = info[node["class_type"]]["input"]
            for name, value in node["inputs"].items():
                spec = real.get("required", {}).get(name) or real.get("optional", {}).get(name)
                options = spec[0] if isinstance(spec[0], list) else (spec[1].get("options") if len(spec) > 1
                                                                      else None)
                if options and not isinstance(value, list) and node["class_type"] not in ("LoadImage",):
                    if name in ("ckpt_name", "lora_name", "model_name", "ram_name", "dape_name", "model_file"):
                        continue  # files: the kit's names
                    assert value in options, (path.name, node["class_type"], name, value)
