"""Build UI-format workflows (what the ComfyUI frontend saves and the template browser opens) from a compact
spec, and derive their API twins with comfy-cli's ``convert_ui_to_api`` using the node schemas.

Usage (regenerate one workflow and its twin):
    python tests/workflow_tools.py            # rewrites every workflow listed in tests/workflow_specs/*.json

A spec is JSON: {"nodes": [{"id": 1, "type": "LoadImage", "widgets": {"image": "example.png"},
                            "inputs": {"x": [src_id, src_slot]}, "pos": [x, y], "title": "..."}...]}

Workflows that travel: every node whose widget values name a file of the download table (``core/sources.py``
``OFFICIAL``, which also lists the ComfyUI-core checkpoints the SeeSR examples load) gets ComfyUI's
``properties.models`` entries ``{"name", "url", "directory"}``, the format of ComfyUI's core templates. The
frontend reads them on load (``getSelectedModelsMetadata``: only entries whose ``name`` is one of the node's widget
values), looks ``name`` up among the files of the model folder ``directory`` (a folder unknown to the server is
an error row), and lists the missing ones. The download button needs a ``https://huggingface.co/`` or
``https://civitai.com/`` URL that is the file itself (the browser saves ``url`` as ``name``) and a model suffix:
frontend 1.27.10 (ComfyUI 0.3.64) allows ``.safetensors``/``.sft`` only, the current frontend also ``.ckpt``,
``.pth``, ``.pt``; other rows are shown with their URL. So ``url`` is the ``resolve/main`` form, never the ``blob/``
page. Files without a Hugging Face mirror get their best direct link (Google Drive ``uc?export=download``). A model that
is a folder (SeeSR's ``unet/`` + ``controlnet/``) gets no entry: the frontend compares single file names, so it would
be reported missing even when installed. Each workflow that loads such files also gets a MarkdownNote listing
them (file, folder, link, and why an entry is missing); the note is UI-only (the API twin skips it).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from aware_restore.core.sources import OFFICIAL, OfficialFile

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SPECS = TESTS / "workflow_specs"

MODEL_TABLE: dict[str, OfficialFile] = dict(OFFICIAL)  # the download table, incl. the SD-2 checkpoints
UI_ONLY_TYPES = frozenset({"Note", "MarkdownNote"})  # frontend-only nodes: no schema, skipped by the API conversion
MODEL_SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")  # what the frontend's missing-model dialog accepts
NOTE_WIDTH = 440
_DRIVE_FILE = re.compile(r"^https://drive\.google\.com/file/d/([A-Za-z0-9_-]+)")


def download_url(spec: OfficialFile) -> str | None:
    """The direct download URL of a table entry for ``properties.models``; None when it has none (a folder, or a
    page that is not a file)."""
    if not spec.filename.endswith(MODEL_SUFFIXES):
        return None
    if spec.repo_id:
        return f"https://huggingface.co/{spec.repo_id}/resolve/main/{spec.repo_file or spec.filename}"
    m = _DRIVE_FILE.match(spec.url)
    if m:
        return f"https://drive.google.com/uc?export=download&id={m.group(1)}"
    return None


def model_entries(widget_values) -> list[dict]:
    """``properties.models`` for a node with these widget values (table files with a download URL, in order)."""
    out, seen = [], set()
    for value in widget_values:
        spec = MODEL_TABLE.get(value) if isinstance(value, str) else None
        url = download_url(spec) if spec else None
        if url and value not in seen:
            seen.add(value)
            out.append({"name": spec.filename, "url": url, "directory": spec.folder})
    return out


def _note_height(text: str) -> int:
    """About the height the frontend needs for the note's markdown at NOTE_WIDTH (title bar excluded)."""
    rows = sum(1 for ln in text.splitlines() if ln.startswith("|") and not ln.startswith("|-"))
    prose = [ln for ln in text.splitlines() if ln and not ln.startswith(("|", "#"))]
    return 80 + 22 * rows + sum(8 + 13 * -(-len(ln) // 68) for ln in prose)


def models_note(files: list[OfficialFile]) -> str:
    """The markdown of the workflow's "Models" note: every table file it loads, where it goes, where to get it."""
    lines = ["## Models this workflow loads", "",
             "| File | Put it in | Download |", "|---|---|---|"]
    remarks = []
    for spec in files:
        url = download_url(spec)
        where = f"`models/{spec.folder}/`"
        if spec.repo_id and url:
            lines.append(f"| `{spec.filename}` | {where} | [Hugging Face]({url}) |")
        elif url:
            lines.append(f"| `{spec.filename}` | {where} | [Google Drive]({url}) |")
            remarks.append(f"`{spec.filename}` is on Google Drive only: ComfyUI lists it as missing with its "
                           "link but downloads from Hugging Face and Civitai alone.")
        else:
            page, _, what = spec.url.partition(" ")
            lines.append(f"| `{spec.filename}` {what} | `models/{spec.folder}/{spec.filename}/` | [page]({page}) |")
            remarks.append(f"`{spec.filename}` is a folder, not one file, so its loader carries no download entry "
                           "(ComfyUI's missing-model check compares file names).")
    lines += ["", ("The loaders carry these files as `properties.models`: when one is missing, ComfyUI lists it "
                   "with its link and, in recent frontends, a download button. The pack's own files also download "
                   "from a shell: `aware-restore --models-dir <ComfyUI>/models download <file>`.")]
    lines += [""] + [f"- {r}" for r in remarks] if remarks else []
    return "\n".join(lines)


def object_info(node_classes) -> dict:
    return {c.GET_SCHEMA().node_id: c.GET_NODE_INFO_V1() for c in node_classes}


def _widget_names(info: dict) -> list[tuple[str, dict, str]]:
    out = []
    for section in ("required", "optional"):
        for name, (typ, opts) in info["input"].get(section, {}).items():
            out.append((name, opts, typ))
    return out


def _is_widget(typ, opts) -> bool:
    return typ in ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO") or isinstance(typ, list)


def build_ui(spec: dict, info: dict[str, dict]) -> dict:
    nodes, links = [], []
    link_id = 0
    out_links: dict[tuple[int, int], list[int]] = {}
    files: list[OfficialFile] = []
    for order, n in enumerate(spec["nodes"]):
        ninfo = info[n["type"]]
        inputs, widgets = [], []
        for name, opts, typ in _widget_names(ninfo):
            linked = name in n.get("inputs", {})
            if _is_widget(typ, opts) and not linked:
                default = opts.get("default")
                if typ == "COMBO" and default is None and opts.get("options"):
                    default = opts["options"][0]
                widgets.append(n.get("widgets", {}).get(name, default))
                if opts.get("control_after_generate"):
                    widgets.append("fixed")
                continue
            entry = {"name": name, "type": "COMBO" if isinstance(typ, list) else typ, "link": None}
            if _is_widget(typ, opts):
                entry["widget"] = {"name": name}
            if linked:
                src, slot = n["inputs"][name]
                link_id += 1
                entry["link"] = link_id
                src_type = info[next(m["type"] for m in spec["nodes"] if m["id"] == src)]["output"][slot]
                links.append([link_id, src, slot, n["id"], len(inputs), src_type])
                out_links.setdefault((src, slot), []).append(link_id)
            inputs.append(entry)
        outputs = [{"name": name, "type": typ, "links": [], "slot_index": i}
                   for i, (name, typ) in enumerate(zip(ninfo["output_name"], ninfo["output"]))]
        properties = {"Node name for S&R": n["type"]}
        entries = model_entries(widgets)
        if entries:
            properties["models"] = entries
        files += [MODEL_TABLE[v] for v in widgets if isinstance(v, str) and v in MODEL_TABLE]
        node = {"id": n["id"], "type": n["type"], "pos": n.get("pos", [order * 320, 100]),
                "size": n.get("size", [300, 120]), "flags": {}, "order": order, "mode": 0,
                "inputs": inputs, "outputs": outputs, "properties": properties,
                "widgets_values": widgets}
        if "title" in n:
            node["title"] = n["title"]
        nodes.append(node)
    for node in nodes:
        for out in node["outputs"]:
            out["links"] = out_links.get((node["id"], out["slot_index"]), [])
    files = list({f.filename: f for f in files}.values())
    if files:
        text = models_note(files)
        x0 = min(node["pos"][0] for node in nodes)
        y0 = min(node["pos"][1] for node in nodes)
        nodes.append({"id": max(node["id"] for node in nodes) + 1, "type": "MarkdownNote",
                      "pos": [x0 - NOTE_WIDTH - 60, y0], "size": [NOTE_WIDTH, _note_height(text)],
                      "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                      "properties": {}, "widgets_values": [text], "title": "Models", "color": "#432",
                      "bgcolor": "#653"})
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": link_id, "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
            "version": 0.4}


def to_api(ui: dict, info: dict[str, dict]) -> dict:
    from comfy_cli.workflow_to_api import convert_ui_to_api

    api = convert_ui_to_api(ui, info)
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in api.items()}


def regenerate(node_classes, names: list[str] | None = None) -> list[str]:
    info = object_info(node_classes)
    built = {}
    for spec_path in sorted(SPECS.glob("*.json")):
        if names and spec_path.stem not in names:
            continue
        spec = json.loads(spec_path.read_text())
        unknown = sorted({n["type"] for n in spec["nodes"]} - set(info))
        if unknown:
            raise SystemExit(f"{spec_path.name}: node types {', '.join(unknown)} are not registered (did their "
                             "module fail to import?); nothing was written")
        ui = build_ui(spec, info)
        built[spec_path.name] = (ui, to_api(ui, info))
    for name, (ui, api) in built.items():  # written only once every spec has built
        (ROOT / "workflows" / name).write_text(json.dumps(ui, indent=2) + "\n")
        (ROOT / "workflows" / "api" / name).write_text(json.dumps(api, indent=2) + "\n")
    return [Path(name).stem for name in built]


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS / "comfy_double"))
    sys.path.insert(0, str(TESTS))
    from conftest import load_pack_nodes  # noqa: E402
    from core_nodes import core_nodes  # noqa: E402

    print(regenerate([*core_nodes(), *load_pack_nodes()], sys.argv[1:] or None))  # noqa: T201
