"""Render every example workflow (``workflows/*.json``, UI format) with the real ComfyUI frontend into
``docs/images/workflows/<name>.png`` for the README.

Starts ComfyUI (``$COMFYUI_DIR/main.py --cpu`` on a free loopback port) in a temporary folder with this checkout as
a custom node (an extra-model-paths YAML ``custom_nodes:`` entry, as ``tests/test_comfyui_integration.py`` does) and
the tiny-model kit (``tests/kit``) as its models, opens the page in headless Chromium through playwright, loads each
workflow with ``app.loadGraphData``, fits the graph to the view with the editor chrome hidden, and writes an
optimised palette PNG.

    COMFYUI_DIR=/path/to/ComfyUI /path/to/comfyui-venv/bin/python docs/render_workflows.py [NAME ...]
    ... docs/render_workflows.py --missing-models     # what the missing-models dialog lists, per workflow

Run it with the Python that runs ComfyUI (it needs ComfyUI's requirements, this pack installed in it, and
``pip install playwright``; the browser is the system ``chromium``, no ``playwright install`` needed).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

log = logging.getLogger("render_workflows")

ROOT = Path(__file__).resolve().parent.parent
WORKFLOWS = ROOT / "workflows"
OUT = ROOT / "docs" / "images" / "workflows"
PACK_DIR = "ComfyUI-AwareRestore"  # the folder name ComfyUI sees (shown in the nodes' source badge)
FOLDERS = ("daclip", "irsde", "dape", "seesr", "ssen", "checkpoints")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# Frontend settings for clean pictures: no first-run template browser, no minimap / canvas info / zoom controls,
# text drawn at every zoom level used here.
SETTINGS = {
    "Comfy.TutorialCompleted": True,
    "Comfy.Minimap.Visible": False,
    "Comfy.Graph.CanvasInfo": False,
    "Comfy.Graph.CanvasMenu": False,
    "Comfy.Canvas.SelectionToolbox": False,
    "Comfy.Notification.ShowVersionUpdates": False,
    "Comfy.Workflow.ShowMissingModelsWarning": False,
    "Comfy.Workflow.ShowMissingNodesWarning": False,
    "Comfy.Validation.Workflows": True,
    "LiteGraph.Canvas.LowQualityRenderingZoomThreshold": 0.2,
    "LiteGraph.Canvas.MinFontSizeForLOD": 4,
}
# Only the graph: every element is hidden but the canvas container, which fills the window.
CSS = """
body * { visibility: hidden !important; }
#graph-canvas-container, #graph-canvas-container * { visibility: visible !important; }
#graph-canvas-container { position: fixed !important; inset: 0 !important; z-index: 2147483000 !important; }
.graph-canvas-menu, .minimap-main-container, .selection-toolbox { display: none !important; }
"""
BOUNDS_JS = """() => {
  let x0 = Infinity, y0 = Infinity, x1 = -Infinity, y1 = -Infinity;
  for (const item of [...window.app.graph._nodes, ...(window.app.graph._groups || [])]) {
    const r = item.boundingRect;
    x0 = Math.min(x0, r[0]); y0 = Math.min(y0, r[1]);
    x1 = Math.max(x1, r[0] + r[2]); y1 = Math.max(y1, r[1] + r[3]);
  }
  return [x0, y0, x1, y1];
}"""
VIEW_JS = """([scale, ox, oy]) => {
  const c = window.app.canvas;
  c.deselectAll && c.deselectAll();
  c.ds.scale = scale; c.ds.offset[0] = ox; c.ds.offset[1] = oy;
  c.setDirty(true, true); c.draw(true, true);
}"""
IMAGES_READY_JS = """() => window.app.graph._nodes.every(n => !n.imgs || n.imgs.every(i => i.complete))"""


# ------------------------------------------------------------------------------------------------ set-up
def _write_models(models: Path) -> None:
    """The tiny-model kit (``tests/kit``, a package run from ``tests/``) writes its models into ``models``."""
    subprocess.run([sys.executable, "-m", "kit", str(models)], cwd=ROOT / "tests", check=True,
                   stdout=subprocess.DEVNULL)


def _sample_images(folder: Path) -> None:
    """Input images the LoadImage nodes preview: photos from scikit-image's bundled data when it is installed,
    else a colour pattern. example.png is small and noisy (the degraded input), reference.png larger and clean."""
    import numpy as np
    from PIL import Image

    try:
        from skimage import data

        photo = data.chelsea()
    except ImportError:
        yy, xx = np.mgrid[0:300, 0:450].astype(np.float32)
        photo = (np.stack([0.5 + 0.4 * np.sin(xx / (17 + 9 * c) + yy / (23 + 5 * c)) for c in range(3)], -1)
                 * 255).astype(np.uint8)
    ref = Image.fromarray(photo)
    small = ref.resize((ref.width // 3, ref.height // 3), Image.BICUBIC)
    rng = np.random.default_rng(0)
    noisy = np.clip(np.asarray(small, np.float32) + rng.normal(0, 12, (small.height, small.width, 3)), 0, 255)
    Image.fromarray(noisy.astype(np.uint8)).save(folder / "example.png")
    ref.save(folder / "reference.png")
    Image.fromarray(noisy.astype(np.uint8)).convert("RGBA").save(folder / "example_rgba.png")


def _prepare(base: Path, models: bool = True) -> Path:
    """A ComfyUI base folder with the pack, the tiny models (or empty model folders), sample inputs and the
    frontend settings."""
    custom = base / "custom_nodes"
    custom.mkdir()
    (custom / PACK_DIR).symlink_to(ROOT, target_is_directory=True)
    if models:
        _write_models(base / "models")
    for d in ("input", "output", "temp", "user/default", *(f"models/{f}" for f in FOLDERS)):
        (base / d).mkdir(parents=True, exist_ok=True)
    _sample_images(base / "input")
    settings = dict(SETTINGS, **{"Comfy.Workflow.ShowMissingModelsWarning": not models})
    (base / "user" / "default" / "comfy.settings.json").write_text(json.dumps(settings, indent=1))
    lines = ["aware_restore_render:", f"  base_path: {base}", "  custom_nodes: custom_nodes"]
    lines += [f"  {f}: models/{f}" for f in FOLDERS]
    yaml = base / "extra_model_paths.yaml"
    yaml.write_text("\n".join(lines) + "\n")
    return yaml


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def comfyui(comfy_dir: Path, base: Path, timeout: float = 300, models: bool = True):
    """Run ComfyUI on a loopback port for the duration of the block; yields its URL."""
    yaml = _prepare(base, models)
    port = _free_port()
    cmd = [sys.executable, "main.py", "--cpu", "--listen", "127.0.0.1", "--port", str(port),
           "--extra-model-paths-config", str(yaml), "--input-directory", str(base / "input"),
           "--output-directory", str(base / "output"), "--temp-directory", str(base / "temp"),
           "--user-directory", str(base / "user"), "--database-url", "sqlite:///:memory:",
           "--disable-auto-launch"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    log_path = base / "comfyui.log"
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, cwd=comfy_dir, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{log_path.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(url + "/system_stats", timeout=2):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.time() > deadline:
                    raise RuntimeError(f"ComfyUI did not start in {timeout:.0f} s:\n"
                                       f"{log_path.read_text()[-4000:]}") from None
                time.sleep(1)
        if f"custom_nodes/{PACK_DIR}" not in log_path.read_text() or "IMPORT FAILED" in "\n".join(
                ln for ln in log_path.read_text().splitlines() if PACK_DIR in ln):
            raise RuntimeError("the pack did not load:\n" + log_path.read_text()[-4000:])
        yield url
    finally:
        _stop(proc)


def _stop(proc: subprocess.Popen, grace: float = 20) -> None:
    """Ask ComfyUI to exit; kill it if it still runs ``grace`` seconds later."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    if proc.poll() is None:
        proc.kill()


# ------------------------------------------------------------------------------------------------ rendering
def optimise_png(png: bytes, colors: int = 256) -> bytes:
    """An adaptive-palette PNG (the UI has few colours; text stays crisp without dithering)."""
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    pal = img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def render(url: str, paths: list[Path], out_dir: Path, chromium: str, max_size=(1600, 900),
           min_scale: float = 0.8, margin: int = 40) -> list[tuple[Path, tuple[int, int], int]]:
    """Screenshot each workflow. The view is fitted to the graph at zoom <= 1; when the graph needs less than
    ``min_scale`` to fit ``max_size``, the picture grows instead so node titles stay readable."""
    from playwright.sync_api import sync_playwright

    out_dir.mkdir(parents=True, exist_ok=True)
    done = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": max_size[0], "height": max_size[1]})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e).splitlines()[0]))
            page.goto(url)
            page.wait_for_function("window.app && window.app.graph && window.app.canvas", timeout=120_000)
            page.wait_for_timeout(2000)  # the app loads its start-up graph first
            page.add_style_tag(content=CSS)
            for path in paths:
                wf = json.loads(path.read_text())
                page.set_viewport_size({"width": max_size[0], "height": max_size[1]})
                page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, false, name, "
                              "{showMissingNodesDialog: false, showMissingModelsDialog: false})", [wf, path.stem])
                page.wait_for_function(f"() => window.app.graph._nodes.length === {len(wf['nodes'])}",
                                       timeout=30_000)
                page.wait_for_function(IMAGES_READY_JS, timeout=30_000)
                page.wait_for_timeout(500)
                x0, y0, x1, y1 = page.evaluate(BOUNDS_JS)
                bw, bh = x1 - x0 + 2 * margin, y1 - y0 + 2 * margin
                scale = min(1.0, max_size[0] / bw, max_size[1] / bh)
                scale = max(scale, min(min_scale, 1.0))
                width, height = round(bw * scale), round(bh * scale)
                page.set_viewport_size({"width": width, "height": height})
                page.wait_for_timeout(300)  # the canvas follows the window size
                page.evaluate(VIEW_JS, [scale, margin - x0, margin - y0])
                page.wait_for_timeout(500)
                png = optimise_png(page.screenshot())
                target = out_dir / f"{path.stem}.png"
                target.write_bytes(png)
                done.append((target, (width, height), len(png)))
                log.info("%s: %dx%d, zoom %.2f, %d KB", target.name, width, height, scale, len(png) // 1024)
            if errors:  # e.g. the frontend's own settings start-up; the pictures are checked by eye
                log.info("page errors: %s", errors)
        finally:
            browser.close()
    return done


MISSING_JS = """() => [...document.querySelectorAll('.comfy-missing-models li')].map(li => ({
  text: li.innerText.replace(/\\s+/g, ' ').trim(),
  download: [...li.querySelectorAll('button')].some(b => !b.disabled)}))"""


def missing_models(url: str, paths: list[Path], chromium: str) -> dict[str, list[dict]]:
    """What the frontend's missing-models dialog lists for each workflow (run with empty model folders): one row
    per ``properties.models`` entry, its text (folder / file, and the refusal reason if any) and whether its
    download button is enabled."""
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(url)
            page.wait_for_function("window.app && window.app.graph", timeout=120_000)
            page.wait_for_timeout(2000)
            for path in paths:
                page.keyboard.press("Escape")  # close the previous dialog
                page.wait_for_timeout(300)
                page.evaluate("([wf, name]) => window.app.loadGraphData(wf, true, false, name, "
                              "{showMissingNodesDialog: false, showMissingModelsDialog: true})",
                              [json.loads(path.read_text()), path.stem])
                page.wait_for_timeout(2500)
                out[path.stem] = page.evaluate(MISSING_JS)
        finally:
            browser.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="workflow names (file stems); default: every workflows/*.json")
    parser.add_argument("--comfyui", default=os.environ.get("COMFYUI_DIR"), help="ComfyUI checkout ($COMFYUI_DIR)")
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("chromium-browser"))
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--size", default="1600x900", help="largest picture at zoom >= --min-scale (WxH)")
    parser.add_argument("--min-scale", type=float, default=0.8)
    parser.add_argument("--keep", action="store_true", help="keep the temporary ComfyUI folder (log, settings)")
    parser.add_argument("--missing-models", action="store_true",
                        help="render nothing: start with empty model folders and print what the frontend's "
                             "missing-models dialog lists for each workflow (checks properties.models)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if not args.comfyui or not (Path(args.comfyui) / "main.py").exists():
        parser.error("set COMFYUI_DIR (or --comfyui) to a ComfyUI checkout")
    if not args.chromium:
        parser.error("no chromium executable (install Debian's chromium or pass --chromium)")
    paths = sorted(WORKFLOWS.glob("*.json"))
    if args.names:
        paths = [p for p in paths if p.stem in args.names]
        missing = set(args.names) - {p.stem for p in paths}
        if missing:
            parser.error(f"no such workflow: {', '.join(sorted(missing))}")
    size = tuple(int(v) for v in args.size.lower().split("x"))
    base = Path(tempfile.mkdtemp(prefix="aware_restore_render_"))
    try:
        if args.missing_models:
            with comfyui(Path(args.comfyui), base, models=False) as url:
                listed = missing_models(url, paths, args.chromium)
            for name, rows in listed.items():
                sys.stdout.write(f"{name}:\n" + "".join(
                    f"  {'download' if r['download'] else 'no download':12} {r['text']}\n" for r in rows))
            return 0
        with comfyui(Path(args.comfyui), base) as url:
            done = render(url, paths, args.out, args.chromium, size, args.min_scale)
        for target, (w, h), nbytes in done:
            sys.stdout.write(f"{target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}  "
                             f"{w}x{h}  {nbytes / 1024:.0f} KB\n")
    finally:
        if args.keep:
            sys.stdout.write(f"kept {base}\n")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
