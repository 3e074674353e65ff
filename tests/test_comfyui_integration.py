"""End-to-end test in a REAL ComfyUI (skipped unless COMFYUI_DIR points at a ComfyUI checkout).

Starts ``main.py --cpu`` on a free loopback port with an extra-model-paths YAML whose ``custom_nodes`` entry
holds this checkout (under another folder name) and whose model folders hold the tiny-model kit; fails on
import errors in the log; checks that ``/object_info`` lists every node with the inputs/outputs the test double
reports; submits every API workflow with ``POST /prompt`` and polls ``/history`` for success and outputs.
See CONTRIBUTING.md for the recipe.
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
from PIL import Image

from conftest import INPUT_IMAGES, ROOT, WORKFLOWS, make_test_image

COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run this test")]

LOG_FAILURES = ("IMPORT FAILED", "Traceback (most recent call last)", "Error while calling comfy_entrypoint",
                "Cannot import", "did not return")
# Workflows that need models no tiny kit can stand in for inside a real ComfyUI (listed with the reason).
NEEDS_REAL_WEIGHTS: dict[str, str] = {}
if (ROOT / "tests" / "integration_skips.json").exists():
    NEEDS_REAL_WEIGHTS.update(json.loads((ROOT / "tests" / "integration_skips.json").read_text()))


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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from kit import build_models_tree

    base = tmp_path_factory.mktemp("real_comfyui")
    models = base / "models"
    build_models_tree(models)
    custom = base / "custom_nodes"
    custom.mkdir()
    (custom / "AwareRestore-integration").symlink_to(ROOT, target_is_directory=True)
    for d in ("input", "output", "temp", "user"):
        (base / d).mkdir()
    for name, (h, w, seed, c) in INPUT_IMAGES.items():
        Image.fromarray(make_test_image(h, w, seed, c)).save(base / "input" / name)
    folders = ["daclip", "irsde", "dape", "seesr", "ssen", "checkpoints", "vae", "diffusers"]
    yaml = ["aware_restore_integration:", f"  base_path: {base}", "  custom_nodes: custom_nodes"]
    yaml += [f"  {f}: models/{f}" for f in folders]
    (base / "extra_model_paths.yaml").write_text("\n".join(yaml) + "\n")
    port = _free_port()
    log_path = base / "comfyui.log"
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(base / "extra_model_paths.yaml"),
           "--input-directory", str(base / "input"), "--output-directory", str(base / "output"),
           "--temp-directory", str(base / "temp"), "--user-directory", str(base / "user"),
           "--database-url", "sqlite:///:memory:", "--disable-auto-launch"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=COMFYUI_DIR, stdout=log, stderr=subprocess.STDOUT, env=env)
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
        yield {"url": url, "log": log_path, "base": base}
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
    target.touch()  # ARDownloadModel then returns the existing path instead of downloading
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


@pytest.mark.parametrize("name", sorted(p.name for p in (WORKFLOWS / "api").glob("*.json")))
def test_api_workflow_runs_in_real_comfyui(server, name):
    if name in NEEDS_REAL_WEIGHTS:
        pytest.skip(NEEDS_REAL_WEIGHTS[name])
    wf = json.loads((WORKFLOWS / "api" / name).read_text())
    hist = _run(server, wf)
    status = hist["status"]
    assert status["status_str"] == "success", json.dumps(status.get("messages"), indent=1)[-4000:]
    outputs = hist["outputs"]
    assert outputs, "no outputs"
    for node_out in outputs.values():
        for img in node_out.get("images", []):
            if img.get("type") == "output":
                assert (server["base"] / "output" / img.get("subfolder", "") / img["filename"]).exists()
