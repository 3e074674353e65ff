"""Build UI-format workflows (what the ComfyUI frontend saves and the template browser opens) from a compact
spec, and derive their API twins with comfy-cli's ``convert_ui_to_api`` using the node schemas.

Usage (regenerate one workflow and its twin):
    python tests/workflow_tools.py            # rewrites every workflow listed in tests/workflow_specs/*.json

A spec is JSON: {"nodes": [{"id": 1, "type": "LoadImage", "widgets": {"image": "example.png"},
                            "inputs": {"x": [src_id, src_slot]}, "pos": [x, y], "title": "..."}...]}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SPECS = TESTS / "workflow_specs"


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
        node = {"id": n["id"], "type": n["type"], "pos": n.get("pos", [order * 320, 100]),
                "size": n.get("size", [300, 120]), "flags": {}, "order": order, "mode": 0,
                "inputs": inputs, "outputs": outputs, "properties": {"Node name for S&R": n["type"]},
                "widgets_values": widgets}
        if "title" in n:
            node["title"] = n["title"]
        nodes.append(node)
    for node in nodes:
        for out in node["outputs"]:
            out["links"] = out_links.get((node["id"], out["slot_index"]), [])
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": link_id, "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
            "version": 0.4}


def to_api(ui: dict, info: dict[str, dict]) -> dict:
    from comfy_cli.workflow_to_api import convert_ui_to_api

    api = convert_ui_to_api(ui, info)
    return {k: {kk: vv for kk, vv in v.items() if kk != "_meta"} for k, v in api.items()}


def regenerate(node_classes, names: list[str] | None = None) -> list[str]:
    info = object_info(node_classes)
    done = []
    for spec_path in sorted(SPECS.glob("*.json")):
        if names and spec_path.stem not in names:
            continue
        ui = build_ui(json.loads(spec_path.read_text()), info)
        (ROOT / "workflows" / spec_path.name).write_text(json.dumps(ui, indent=2) + "\n")
        (ROOT / "workflows" / "api" / spec_path.name).write_text(json.dumps(to_api(ui, info), indent=2) + "\n")
        done.append(spec_path.stem)
    return done


if __name__ == "__main__":
    sys.path.insert(0, str(TESTS / "comfy_double"))
    sys.path.insert(0, str(TESTS))
    from conftest import load_pack_nodes  # noqa: E402
    from core_nodes import core_nodes  # noqa: E402

    print(regenerate([*core_nodes(), *load_pack_nodes()], sys.argv[1:] or None))  # noqa: T201
