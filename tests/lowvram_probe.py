"""Run inside a REAL ComfyUI (cwd = the ComfyUI checkout, its venv's python): load every plain-torch family
through ``nodes.common.load_models`` with ComfyUI's own ``comfy.model_management`` forced into its partial-load
(low-VRAM) branch, run the family's node, and check that each model ended fully loaded.

On a CPU-only machine ComfyUI never takes that branch (a CPU load device disables it), so the probe puts the
module state where a small GPU would: ``vram_state = LOW_VRAM``, the load device not treated as a CPU, a free
memory of a few KiB and no reserve. A control load of the same models without ``force_full_load`` shows the
branch really loads partially (ComfyUI 0.3.64 never loads less than 128 MiB, so the tiny test models fit there;
newer ComfyUI loads them partially). Usage: ``python tests/lowvram_probe.py WORK_DIR``; prints one line per family
and ``ALL FULLY LOADED`` at the end. Driven by ``tests/test_lowvram.py`` when ``COMFYUI_DIR`` is set.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path

import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
BUDGET = 4096  # bytes of "free VRAM"


def main(work: Path) -> int:
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management as mm
    import folder_paths

    sys.path.insert(0, str(TESTS))  # tests only: the tiny-model kit
    from kit import build_models_tree

    pkg = work / "pkg"
    pkg.mkdir(parents=True, exist_ok=True)
    if not (pkg / "aware_restore").exists():
        (pkg / "aware_restore").symlink_to(ROOT, target_is_directory=True)
    sys.path.insert(0, str(pkg))
    folder_paths.models_dir = str(work / "models")
    build_models_tree(work / "models")
    import aware_restore
    from aware_restore.nodes import common

    ext = asyncio.run(aware_restore.comfy_entrypoint())
    asyncio.run(ext.on_load())
    nodes = {c.GET_SCHEMA().node_id: c for c in asyncio.run(ext.get_node_list())}

    # the state of a small GPU
    mm.vram_state = mm.VRAMState.LOW_VRAM
    mm.lowvram_available = True
    mm.is_device_cpu = lambda device: False
    mm.get_free_memory = lambda dev=None, torch_free_too=False: (BUDGET, BUDGET) if torch_free_too else BUDGET
    mm.minimum_inference_memory = lambda: 0
    mm.extra_reserved_memory = lambda: 0

    g = torch.Generator().manual_seed(0)
    image = torch.rand(1, 48, 64, 3, generator=g)
    reference = torch.rand(1, 96, 128, 3, generator=g)

    def out(result):
        return result.args if hasattr(result, "args") else result

    families = {
        "DA-CLIP": lambda: out(nodes["DACLIPLoader"].execute("daclip_ViT-B-32.pt", "fp32"))[0],
        "IR-SDE": lambda: out(nodes["IRSDELoader"].execute("universal-ir.pth"))[0],
        "RAM/DAPE": lambda: out(nodes["DAPELoader"].execute(**_widgets("dape_tagging", "DAPELoader")))[0],
        "SSEN": lambda: out(nodes["SSENLoader"].execute())[0],  # the shipped weights
    }

    def run(name, payload, cache):
        if name == "DA-CLIP":
            return out(nodes["DACLIPEncode"].execute(payload, image))[0]
        if name == "IR-SDE":
            return out(nodes["DACLIPRestore"].execute(payload, image, daclip_embeds=cache["DA-CLIP"]))[0]
        if name == "RAM/DAPE":
            return out(nodes["DAPETagger"].execute(payload, image))[2].embeds
        return out(nodes["SSENReferenceSR"].execute(payload, image, reference, 0, 16))[0]

    ok, cache = True, {}
    for name, load in families.items():
        control = load()  # without force_full_load: what ComfyUI does with a plain torch.nn model
        mm.load_models_gpu([control.patcher], memory_required=0)
        partial = control.patcher.loaded_size() < control.patcher.model_size()
        mm.unload_all_models()
        payload = load()
        result = run(name, payload, cache)
        cache[name] = result
        patcher = payload.patcher
        full = patcher.loaded_size() >= patcher.model_size() and not getattr(patcher.model, "model_lowvram", False)
        finite = bool(torch.isfinite(result).all()) if torch.is_tensor(result) else True
        print(f"{name}: fully loaded={full} ({patcher.loaded_size()}/{patcher.model_size()} bytes), "
              f"finite={finite}; control without force_full_load loads partially={partial}")
        ok &= full and finite
        mm.unload_all_models()
    print("ALL FULLY LOADED" if ok else "SOME MODEL NOT FULLY LOADED")
    return 0 if ok else 1


def _widgets(workflow: str, class_type: str) -> dict:
    import json

    prompt = json.loads((ROOT / "workflows" / "api" / f"{workflow}.json").read_text())
    node = next(v for v in prompt.values() if v["class_type"] == class_type)
    return {k: v for k, v in node["inputs"].items() if not isinstance(v, list)}


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(Path(sys.argv[1])))
