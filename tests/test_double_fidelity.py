"""The ComfyUI test double keeps ComfyUI's signatures, and the pack's wrappers and control accept what core passes
them: both checked (by parsing the sources) against every real ComfyUI checkout present — ``COMFYUI_DIR`` (e.g.
0.3.64) and ``COMFYUI_NEW_DIR`` (e.g. 0.33). The double follows the newest one exactly (``COMFYUI_NEW_DIR`` when
set); against an older one each real signature must be one the double extends compatibly (same parameters in the
same order and defaults, the double's extra ones with defaults). Names marked optional exist only in newer cores
(the pack uses them by feature test). Skipped unless one of the variables is set."""

from __future__ import annotations

import ast
import inspect
import os
from pathlib import Path

import pytest

DOUBLE = Path(__file__).resolve().parent / "comfy_double"
COMFYUI_DIRS = [(name, os.environ[name]) for name in ("COMFYUI_DIR", "COMFYUI_NEW_DIR") if os.environ.get(name)]
REFERENCE = COMFYUI_DIRS[-1][0] if COMFYUI_DIRS else None  # the double follows this one exactly
pytestmark = pytest.mark.skipif(not COMFYUI_DIRS, reason="set COMFYUI_DIR and/or COMFYUI_NEW_DIR to ComfyUI checkouts")
comfyui = pytest.mark.parametrize("which", [n for n, _ in COMFYUI_DIRS])


def _dir(which: str) -> Path:
    return Path(dict(COMFYUI_DIRS)[which])


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
        "unet_dtype", "is_oom?",
    ],
    "comfy/sampler_helpers.py": ["prepare_sampling", "_prepare_sampling", "get_models_from_cond"],
    "comfy/utils.py": ["ProgressBar.__init__", "ProgressBar.update_absolute", "ProgressBar.update",
                       "set_progress_bar_global_hook", "common_upscale"],
    "comfy/model_patcher.py": ["ModelPatcher.__init__", "ModelPatcher.model_size", "ModelPatcher.clone",
                               "ModelPatcher.is_clone", "ModelPatcher.get_model_object", "ModelPatcher.add_object_patch",
                               "ModelPatcher.add_wrapper", "ModelPatcher.add_wrapper_with_key",
                               "ModelPatcher.remove_wrappers_with_key", "ModelPatcher.get_wrappers",
                               "ModelPatcher.get_all_wrappers", "ModelPatcher.set_additional_models",
                               "ModelPatcher.remove_additional_models", "ModelPatcher.get_additional_models_with_key",
                               "ModelPatcher.get_additional_models", "ModelPatcher.is_dynamic?"],
    # SeeSR native: the control contract and the wrapper machinery (tests/test_seesr_native.py)
    "comfy/controlnet.py": ["broadcast_image_to", "ControlBase.__init__", "ControlBase.set_cond_hint",
                            "ControlBase.pre_run", "ControlBase.set_previous_controlnet", "ControlBase.cleanup",
                            "ControlBase.get_models", "ControlBase.get_extra_hooks", "ControlBase.copy_to",
                            "ControlBase.inference_memory_requirements", "ControlBase.control_merge",
                            "ControlBase.set_extra_arg", "ControlBase.get_models_only_self?",
                            "ControlBase.get_instance_for_device?", "ControlBase.deepclone_multigpu?"],
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


def _compatible(real, ours) -> bool:
    """``ours`` extends ``real`` for keyword calls: real's parameters in the same order (a subsequence) with the
    same defaults; the extra ones have defaults (or are *args / **kwargs)."""
    pos = [ours.index(p) for p in real if p in ours]
    if len(pos) != len(real) or pos != sorted(pos):
        return False
    return all(d is not None or n.startswith("*") for n, d in ours if (n, d) not in real)


@comfyui
@pytest.mark.parametrize("rel", sorted(CHECKED))
def test_double_signatures_match_comfyui(which, rel):
    real_tree = ast.parse((_dir(which) / rel).read_text())
    double_tree = ast.parse((DOUBLE / DOUBLE_FILE.get(rel, rel)).read_text())
    mismatches = []
    for entry in CHECKED[rel]:
        qual, optional = entry.rstrip("?"), entry.endswith("?")
        real, ours = _find(real_tree, qual), _find(double_tree, qual)
        assert ours is not None, f"{rel}:{qual} missing from the double"
        if real is None:
            assert optional and which != REFERENCE, f"{rel}:{qual} no longer exists in ComfyUI ({which})"
            continue
        a, b = _signature(real), _signature(ours)
        if a != b if which == REFERENCE else not _compatible(a, b):
            mismatches.append(f"{qual}: real {a} vs double {b}")
    assert not mismatches, f"{which}:\n" + "\n".join(mismatches)


# Where core calls the pack's objects: wrapper type -> (file, the pack's wrapper classes registered for it).
WRAPPER_CALLS = {
    "PREPARE_SAMPLING": ("comfy/sampler_helpers.py", ["nodes.seesr_tiling:TiledMemory"]),
    "CALC_COND_BATCH": ("comfy/samplers.py", ["nodes.seesr_tiling:SeeSRTiles"]),
    "DIFFUSION_MODEL": ("comfy/ldm/modules/diffusionmodules/openaimodel.py", ["nodes.seesr_patch:RCAPatch"]),
}
# ControlBase methods core calls on the pack's SeeSRControl: method -> files with the calls
CONTROL_CALLS = {"get_control": ["comfy/samplers.py"], "pre_run": ["comfy/samplers.py"],
                 "get_models": ["comfy/sampler_helpers.py"], "inference_memory_requirements": ["comfy/sampler_helpers.py"],
                 "cleanup": ["comfy/sampler_helpers.py"]}


def _pack_object(spec: str):
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(f"aware_restore.{module}"), name)


def _call_shape(call: ast.Call) -> tuple[int, list[str], bool, bool]:
    """(positional count, keyword names, has *args, has **kwargs) of a call in core's source."""
    star = any(isinstance(a, ast.Starred) for a in call.args)
    return (sum(not isinstance(a, ast.Starred) for a in call.args), [k.arg for k in call.keywords if k.arg],
            star, any(k.arg is None for k in call.keywords))


def _bind(fn, shape, lead: int) -> str | None:
    """Bind a call of ``shape`` (after ``lead`` leading arguments: self, executor) to ``fn``'s signature."""
    n, kws, star, dstar = shape
    sig = inspect.signature(fn)
    kinds = {p.kind for p in sig.parameters.values()}
    if star and inspect.Parameter.VAR_POSITIONAL not in kinds:
        return "core passes *args"
    if dstar and inspect.Parameter.VAR_KEYWORD not in kinds:
        return "core passes **kwargs"
    try:
        sig.bind(*([None] * (lead + n)), **{k: None for k in kws})
    except TypeError as exc:
        return str(exc)
    return None


@comfyui
@pytest.mark.parametrize("wrapper_type", sorted(WRAPPER_CALLS))
def test_pack_wrappers_accept_what_core_passes(which, wrapper_type, comfy_env):
    """Every call core makes to a wrapper of this type (``executor.execute(...)`` next to ``WrappersMP.<type>``)
    binds to the pack's wrapper, which also takes and forwards ``*args, **kwargs`` it does not use."""
    rel, classes = WRAPPER_CALLS[wrapper_type]
    tree = ast.parse((_dir(which) / rel).read_text())
    shapes = []
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        if not any(isinstance(n, ast.Attribute) and n.attr == wrapper_type for n in ast.walk(fn)):
            continue
        shapes += [_call_shape(c) for c in ast.walk(fn) if isinstance(c, ast.Call)
                   and isinstance(c.func, ast.Attribute) and c.func.attr == "execute"]
    assert shapes, f"{which}: no call of a {wrapper_type} wrapper found in {rel}"
    problems = []
    for spec in classes:
        call = _pack_object(spec).__call__
        kinds = {p.kind for p in inspect.signature(call).parameters.values()}
        if not {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD} <= kinds:
            problems.append(f"{spec}.__call__ does not take *args, **kwargs")
        problems += [f"{spec}{shape}: {err}" for shape in shapes if (err := _bind(call, shape, 2))]
    assert not problems, f"{which}:\n" + "\n".join(problems)


@comfyui
def test_pack_control_accepts_what_core_passes(which, comfy_env):
    control = _pack_object("nodes.seesr_control:SeeSRControl")
    problems = []
    for method, files in CONTROL_CALLS.items():
        shapes = []
        for rel in files:
            tree = ast.parse((_dir(which) / rel).read_text())
            shapes += [_call_shape(c) for c in ast.walk(tree) if isinstance(c, ast.Call)
                       and isinstance(c.func, ast.Attribute) and c.func.attr == method
                       and "patcher" not in ast.unparse(c.func.value)]  # the model patchers' own pre_run/cleanup
        assert shapes, f"{which}: core no longer calls {method} in {files}"
        problems += [f"{method}{shape}: {err}" for shape in shapes
                     if (err := _bind(getattr(control, method), shape, 1))]
    assert not problems, f"{which}:\n" + "\n".join(problems)


# Core callables the pack calls that the double does not provide: (file, name) -> how the pack calls them
# (positional count, keywords). The real signature must accept that call.
PACK_CALLS = {
    ("comfy/controlnet.py", "load_controlnet_state_dict"): (1, ["model_options"]),
    ("comfy/model_management.py", "unet_dtype"): (0, ["model_params", "supported_dtypes"]),
    ("comfy/ldm/modules/attention.py", "attention_pytorch"): (4, ["attn_precision"]),
}


def _fn_from_source(fn: ast.FunctionDef):
    """A function with the same signature as the parsed one (bodies are not needed to bind a call)."""
    stub = ast.FunctionDef(name=fn.name, args=fn.args, body=[ast.Pass()], decorator_list=[], returns=None,
                           type_params=[])
    mod = ast.fix_missing_locations(ast.Module(body=[stub], type_ignores=[]))
    scope: dict = {}
    exec(compile(mod, "<core signature>", "exec"), {"torch": __import__("torch")}, scope)  # noqa: S102
    return scope[fn.name]


@comfyui
def test_core_functions_the_pack_calls_accept_its_calls(which):
    problems = []
    for (rel, name), (n, kws) in PACK_CALLS.items():
        fn = _find(ast.parse((_dir(which) / rel).read_text()), name)
        assert fn is not None, f"{which}: {rel}:{name} no longer exists"
        if err := _bind(_fn_from_source(fn), (n, kws, False, False), 0):
            problems.append(f"{rel}:{name}: {err}")
    text = (_dir(which) / "comfy/controlnet.py").read_text()
    for attr in ("self.control_model =", "self.control_model_wrapped =", "self.manual_cast_dtype ="):
        assert attr in text, f"{which}: comfy.controlnet.ControlNet no longer sets {attr}"
    assert "optimized_attention" in (_dir(which) / "comfy/ldm/modules/attention.py").read_text()
    assert "class manual_cast" in (_dir(which) / "comfy/ops.py").read_text()
    assert not problems, f"{which}:\n" + "\n".join(problems)


@comfyui
def test_schema_fields_match_comfyui(which):
    def fields(tree):
        cls = next(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == "Schema")
        return [(t.target.id, ast.unparse(t.value) if t.value else None) for t in cls.body
                if isinstance(t, ast.AnnAssign)]

    real = fields(ast.parse((_dir(which) / "comfy_api/latest/_io.py").read_text()))
    ours = fields(ast.parse((DOUBLE / "comfy_api/latest/_io.py").read_text()))
    if which == REFERENCE:
        assert real == ours
    else:  # an older core: its fields, in order, are among the double's (the pack sets them by keyword)
        names = [n for n, _ in ours]
        assert [n for n, _ in real if n in names] == [n for n, _ in real]


@comfyui
def test_double_constants_match_comfyui(which):
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

    def same(real_value, ours_value):  # the reference exactly; an older core: a part of what the double has
        if which == REFERENCE:
            return real_value == ours_value
        if isinstance(real_value, dict):
            return all(ours_value.get(k) == v for k, v in real_value.items())
        return set(real_value) <= set(ours_value)

    real = ast.parse((_dir(which) / "comfy/patcher_extension.py").read_text())
    ours = ast.parse((DOUBLE / "comfy/patcher_extension.py").read_text())
    assert same(assigns(real, "WrappersMP", None), assigns(ours, "WrappersMP", None))
    real = ast.parse((_dir(which) / "comfy/controlnet.py").read_text())
    ours = ast.parse((DOUBLE / "comfy/controlnet.py").read_text())
    assert same(assigns(real, "ControlBase", "__init__"), assigns(ours, "ControlBase", "__init__"))
    import sys

    sys.path.insert(0, str(DOUBLE))
    import sd_nodes

    text = (_dir(which) / "comfy/samplers.py").read_text()
    ksampler = ast.literal_eval(re.search(r"^KSAMPLER_NAMES = (\[.*?\])", text, re.DOTALL | re.MULTILINE).group(1))
    extra = ast.literal_eval(re.search(r"^SAMPLER_NAMES = KSAMPLER_NAMES \+ (\[.*?\])", text, re.MULTILINE).group(1))
    assert same(ksampler + extra, sd_nodes.SAMPLER_NAMES)
    handlers = re.search(r"^SCHEDULER_HANDLERS = \{(.*?)^\}", text, re.DOTALL | re.MULTILINE).group(1)
    assert same(re.findall(r'^\s*"(\w+)":', handlers, re.MULTILINE), sd_nodes.SCHEDULER_NAMES)
