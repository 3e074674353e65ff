"""The ComfyUI test double keeps ComfyUI's signatures: compared (by parsing both sources) with a real ComfyUI
checkout. Skipped unless COMFYUI_DIR is set."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
COMFYUI_DIR = os.environ.get("COMFYUI_DIR")
pytestmark = pytest.mark.skipif(not COMFYUI_DIR, reason="set COMFYUI_DIR to a ComfyUI checkout to run this test")

# file -> qualified callables whose signature the double must share
CHECKED = {
    "comfy_api/latest/_io.py": [
        "Input.__init__", "WidgetInput.__init__", "Output.__init__", "Boolean.Input.__init__", "Int.Input.__init__",
        "Float.Input.__init__", "String.Input.__init__", "Combo.Input.__init__",
        "NodeOutput.__init__", "Custom", "comfytype",
    ],
    "comfy_api/latest/_ui.py": ["PreviewText.__init__"],
    "folder_paths.py": [
        "add_model_folder_path", "get_folder_paths", "get_filename_list", "get_full_path", "get_full_path_or_raise",
        "get_input_directory", "get_output_directory", "get_annotated_filepath", "map_legacy",
        "filter_files_extensions",
    ],
    "comfy/model_management.py": [
        "load_models_gpu", "should_use_fp16", "should_use_bf16", "throw_exception_if_processing_interrupted",
        "get_torch_device", "unet_offload_device", "intermediate_device", "module_size", "soft_empty_cache",
        "free_memory", "interrupt_current_processing", "processing_interrupted", "vae_dtype", "is_device_cpu",
    ],
    "comfy/utils.py": ["ProgressBar.__init__", "ProgressBar.update_absolute", "ProgressBar.update",
                       "set_progress_bar_global_hook", "common_upscale"],
    "comfy/model_patcher.py": ["ModelPatcher.__init__", "ModelPatcher.model_size", "ModelPatcher.clone",
                               "ModelPatcher.is_clone", "ModelPatcher.get_model_object", "ModelPatcher.add_object_patch",
                               "ModelPatcher.add_wrapper", "ModelPatcher.add_wrapper_with_key",
                               "ModelPatcher.remove_wrappers_with_key", "ModelPatcher.get_wrappers",
                               "ModelPatcher.get_all_wrappers", "ModelPatcher.set_additional_models",
                               "ModelPatcher.remove_additional_models", "ModelPatcher.get_additional_models_with_key",
                               "ModelPatcher.get_additional_models"],
    # SeeSR native: the control contract and the wrapper machinery (tests/test_seesr_native.py)
    "comfy/controlnet.py": ["broadcast_image_to", "ControlBase.__init__", "ControlBase.set_cond_hint",
                            "ControlBase.pre_run", "ControlBase.set_previous_controlnet", "ControlBase.cleanup",
                            "ControlBase.get_models", "ControlBase.get_extra_hooks", "ControlBase.copy_to",
                            "ControlBase.inference_memory_requirements", "ControlBase.control_merge",
                            "ControlBase.set_extra_arg"],
    "comfy/patcher_extension.py": ["add_wrapper", "add_wrapper_with_key", "get_wrappers_with_key", "get_all_wrappers",
                                   "WrapperExecutor.__init__", "WrapperExecutor.__call__", "WrapperExecutor.execute",
                                   "WrapperExecutor._create_next_executor", "WrapperExecutor.new_executor",
                                   "WrapperExecutor.new_class_executor"],
    # the SD objects the SeeSR nodes call (CLIP from Load Checkpoint, VAE); doubled in sd_nodes.py
    "comfy/sd.py": ["CLIP.tokenize", "CLIP.encode_from_tokens", "CLIP.encode_from_tokens_scheduled", "CLIP.encode",
                    "CLIP.clone", "VAE.encode", "VAE.decode", "VAE.encode_tiled", "VAE.decode_tiled",
                    "VAE.vae_encode_crop_pixels"],
}
DOUBLE_FILE = {"comfy/sd.py": "sd_nodes.py"}
MUTABLE_EMPTY = {"{}", "[]", "None"}  # the double avoids mutable defaults; an empty {} / [] equals None here


def _find(tree: ast.AST, qualname: str) -> ast.FunctionDef | None:
    parts = qualname.split(".")
    nodes = [tree]
    for part in parts:
        found = None
        for node in nodes:
            for child in ast.iter_child_nodes(node):
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child.name == part:
                    found = child
        if found is None:
            return None
        nodes = [found]
    return nodes[0] if isinstance(nodes[0], (ast.FunctionDef, ast.AsyncFunctionDef)) else None


def _signature(fn: ast.FunctionDef) -> list[tuple[str, str | None]]:
    args = fn.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
    sig = [(a.arg, d) for a, d in zip(positional, defaults)]
    sig += [(a.arg, ast.unparse(d) if d is not None else None) for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    sig = [(name, "None" if d in MUTABLE_EMPTY else d) for name, d in sig]
    if args.vararg:
        sig.append(("*" + args.vararg.arg, None))
    if args.kwarg:
        sig.append(("**" + args.kwarg.arg, None))
    return sig


@pytest.mark.parametrize("rel", sorted(CHECKED))
def test_double_signatures_match_comfyui(rel):
    real_tree = ast.parse((Path(COMFYUI_DIR) / rel).read_text())
    double_tree = ast.parse((DOUBLE / DOUBLE_FILE.get(rel, rel)).read_text())
    mismatches = []
    for qual in CHECKED[rel]:
        real, ours = _find(real_tree, qual), _find(double_tree, qual)
        assert real is not None, f"{rel}:{qual} no longer exists in ComfyUI"
        assert ours is not None, f"{rel}:{qual} missing from the double"
        if _signature(real) != _signature(ours):
            mismatches.append(f"{qual}: real {_signature(real)} vs double {_signature(ours)}")
    assert not mismatches, "\n".join(mismatches)


def test_schema_fields_match_comfyui():
    def fields(tree):
        cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Schema")
        return [(t.target.id, ast.unparse(t.value) if t.value else None) for t in cls.body
                if isinstance(t, ast.AnnAssign)]

    real = fields(ast.parse((Path(COMFYUI_DIR) / "comfy_api/latest/_io.py").read_text()))
    ours = fields(ast.parse((DOUBLE / "comfy_api/latest/_io.py").read_text()))
    assert real == ours


def test_double_constants_match_comfyui():
    """Names the double hard-codes: the wrapper types, the ControlBase attributes set in __init__, the sampler and
    scheduler lists of KSampler (sd_nodes.py)."""
    import re

    def assigns(tree, cls_name, fn_name):
        cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls_name)
        if fn_name is None:
            return {t.targets[0].id: ast.unparse(t.value) for t in cls.body
                    if isinstance(t, ast.Assign) and isinstance(t.targets[0], ast.Name)}
        fn = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == fn_name)
        targets = [t.targets[0] if isinstance(t, ast.Assign) else t.target for t in ast.walk(fn)
                   if isinstance(t, (ast.Assign, ast.AnnAssign))]
        return {ast.unparse(t) for t in targets if ast.unparse(t).startswith("self.")}

    real = ast.parse((Path(COMFYUI_DIR) / "comfy/patcher_extension.py").read_text())
    ours = ast.parse((DOUBLE / "comfy/patcher_extension.py").read_text())
    assert assigns(real, "WrappersMP", None) == assigns(ours, "WrappersMP", None)
    real = ast.parse((Path(COMFYUI_DIR) / "comfy/controlnet.py").read_text())
    ours = ast.parse((DOUBLE / "comfy/controlnet.py").read_text())
    assert assigns(real, "ControlBase", "__init__") == assigns(ours, "ControlBase", "__init__")
    import sys

    sys.path.insert(0, str(DOUBLE))
    import sd_nodes

    text = (Path(COMFYUI_DIR) / "comfy/samplers.py").read_text()
    ksampler = ast.literal_eval(re.search(r"^KSAMPLER_NAMES = (\[.*?\])", text, re.DOTALL | re.MULTILINE).group(1))
    extra = ast.literal_eval(re.search(r"^SAMPLER_NAMES = KSAMPLER_NAMES \+ (\[.*?\])", text, re.MULTILINE).group(1))
    assert sd_nodes.SAMPLER_NAMES == ksampler + extra
    handlers = re.search(r"^SCHEDULER_HANDLERS = \{(.*?)^\}", text, re.DOTALL | re.MULTILINE).group(1)
    assert sd_nodes.SCHEDULER_NAMES == re.findall(r'^\s*"(\w+)":', handlers, re.MULTILINE)
