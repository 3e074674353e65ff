"""Workflows that travel: the loaders' ``properties.models`` entries (what ComfyUI's frontend reads to list missing
models with a download link) agree with the download table (``core/sources.py`` OFFICIAL, plus the core-node files
incl. the SD-2 checkpoints), and every loader that loads a table file carries its entry."""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qs, urlparse

import pytest
from aware_restore.core.sources import OFFICIAL
from conftest import ROOT, WORKFLOWS, load_pack_nodes

UI_FILES = sorted(WORKFLOWS.glob("*.json"))
# Loader widget values that are not files of the download table, and why they need no download entry.
LOCAL_ONLY = {
    "ssen_small.safetensors (shipped)": "the small SSEN model ships inside the pack (core/ssen/weights)",
    "none": "DAPELoader without the DAPE LoRA (plain RAM)",
}
SUFFIXES = (".safetensors", ".sft", ".ckpt", ".pth", ".pt")  # the current frontend's missing-model suffixes
NOT_MODEL_WIDGETS = {"dtype"}


@pytest.fixture(scope="module")
def info():
    from core_nodes import core_nodes
    from workflow_tools import object_info

    return object_info([*core_nodes(), *load_pack_nodes()])


def _table():

    return dict(OFFICIAL)


def _nodes(path):
    return json.loads(path.read_text())["nodes"]


def _widgets(node, info) -> dict[str, object]:
    """Widget name -> value of a UI node (the order the frontend saves: inputs in schema order, linked ones out)."""
    from workflow_tools import _is_widget, _widget_names

    linked = {i["name"] for i in node["inputs"] if i.get("link") is not None}
    names = []
    for name, opts, typ in _widget_names(info[node["type"]]):
        if _is_widget(typ, opts) and name not in linked:
            names.append(name)
            if opts.get("control_after_generate"):
                names.append(f"{name}:control")
    return dict(zip(names, node["widgets_values"]))


def _is_loader(node_type: str) -> bool:
    return node_type.endswith("Loader") or node_type == "CheckpointLoaderSimple"


def _expected_url(spec) -> str | None:
    if spec.repo_id:
        return f"https://huggingface.co/{spec.repo_id}/resolve/main/{spec.repo_file or spec.filename}"
    m = re.match(r"https://drive\.google\.com/file/d/([\w-]+)/", spec.url)
    return f"https://drive.google.com/uc?export=download&id={m.group(1)}" if m else None


def test_there_are_workflows_with_entries():
    assert UI_FILES
    assert any("models" in n["properties"] for p in UI_FILES for n in _nodes(p))


def test_table_pages_match_their_hugging_face_file():
    for name, spec in _table().items():
        assert spec.filename == name
        if spec.repo_id:
            assert spec.url == f"https://huggingface.co/{spec.repo_id}/blob/main/{spec.repo_file or name}", name


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_entries_match_the_download_table(path):
    table = _table()
    for node in _nodes(path):
        for entry in node["properties"].get("models", []):
            where = f"{path.name} node {node['id']} ({node['type']}): {entry}"
            assert set(entry) == {"name", "url", "directory"}, where
            spec = table.get(entry["name"])
            assert spec is not None, f"{where}: not a file of the download table"
            assert entry["directory"] == spec.folder, where
            assert entry["name"] in node["widgets_values"], f"{where}: the frontend only reads selected files"
            assert entry["name"].endswith(SUFFIXES), where
            assert entry["url"] == _expected_url(spec), where
            url = urlparse(entry["url"])
            assert url.scheme == "https" and url.netloc, where  # the frontend's schema: z.string().url()
            if spec.repo_id:  # a direct file URL the browser can save as `name`
                assert "/resolve/" in url.path and url.path.endswith("/" + entry["name"].split("/")[-1]), where
            else:
                assert url.netloc == "drive.google.com" and parse_qs(url.query).get("export") == ["download"], where


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_every_loaded_table_file_has_an_entry(path, info):
    table = _table()
    for node in _nodes(path):
        if node["type"] in ("Note", "MarkdownNote"):
            continue
        names = [e["name"] for e in node["properties"].get("models", [])]
        assert len(names) == len(set(names)), (path.name, node["id"])
        for widget, value in _widgets(node, info).items():
            if not isinstance(value, str) or value not in table:
                continue
            spec = table[value]
            if _expected_url(spec) and value.endswith(SUFFIXES):
                assert value in names, f"{path.name} node {node['id']} {widget}={value!r} has no properties.models"
            else:  # a folder (SeeSR) or a page only: no entry, the note says why
                assert value not in names, (path.name, node["id"], value)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_loaders_load_official_files(path, info):
    """A shared workflow must name the official file, or its user gets no download (LOCAL_ONLY lists exceptions)."""
    table = _table()
    for node in _nodes(path):
        if not _is_loader(node["type"]):
            continue
        ninfo = info[node["type"]]
        combos = {name for section in ("required", "optional") for name, (typ, _) in
                  ninfo["input"].get(section, {}).items() if typ == "COMBO" or isinstance(typ, list)}
        for widget, value in _widgets(node, info).items():
            if widget in combos and widget not in NOT_MODEL_WIDGETS:
                assert value in table or value in LOCAL_ONLY, (
                    f"{path.name} node {node['id']} ({node['type']}) {widget}={value!r} is neither a file of the "
                    f"download table nor in LOCAL_ONLY")


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_models_note_lists_every_file(path, info):
    table = _table()
    nodes = _nodes(path)
    used = {v for n in nodes if n["type"] != "MarkdownNote" for v in _widgets(n, info).values()
            if isinstance(v, str) and v in table}
    notes = [n for n in nodes if n["type"] == "MarkdownNote" and n.get("title") == "Models"]
    if not used:
        assert not notes, path.name
        return
    assert len(notes) == 1, path.name
    text = notes[0]["widgets_values"][0]
    for name in used:
        assert f"`{name}`" in text and f"models/{table[name].folder}/" in text, (path.name, name)
        if _expected_url(table[name]):
            assert _expected_url(table[name]) in text, (path.name, name)


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_twin_has_no_ui_only_nodes(path):
    api = json.loads((WORKFLOWS / "api" / path.name).read_text())
    assert not {n["class_type"] for n in api.values()} & {"Note", "MarkdownNote"}


def test_workflows_are_regenerated_from_their_specs(info):
    """workflows/*.json is generated output: ``python tests/workflow_tools.py`` after editing a spec."""
    from workflow_tools import SPECS, build_ui

    specs = sorted(SPECS.glob("*.json"))
    assert {p.name for p in specs} == {p.name for p in UI_FILES}
    for spec in specs:
        built = build_ui(json.loads(spec.read_text()), info)
        assert built == json.loads((WORKFLOWS / spec.name).read_text()), (
            f"{spec.name}: run `python tests/workflow_tools.py`")
    assert ROOT.joinpath("workflows", "api").is_dir()
