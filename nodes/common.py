"""The one adapter between core/ and ComfyUI.

* model folders registered with ``folder_paths`` (appending, so ``extra_model_paths.yaml`` entries stay first);
* file lookup with errors that name the model expected and the folders searched;
* core ``nn.Module`` → ComfyUI ``ModelPatcher`` and loading through ``load_models_gpu``;
* compute dtype chosen with ComfyUI's ``should_use_bf16`` / ``should_use_fp16``;
* a plain ``progress(done, total)`` callable for core loops that drives ``comfy.utils.ProgressBar`` and checks
  for interruption;
* IMAGE ``[B,H,W,C]`` ↔ ``[B,3,H,W]`` conversion (alpha kept aside).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch

from ..core import image as core_image
from ..core.checkpoint import MODEL_SUFFIXES, load_state_dict
from ..core.paths import MODEL_FOLDERS
from ..core.registry import FAMILIES, WrongModelError, require_family

log = logging.getLogger(__name__)

CATEGORY = "AwareRestore"
Progress = Callable[[int, int], None]


# ----------------------------------------------------------------------------------------------- folders
def register_model_folders() -> None:
    """Add ``models/<folder>`` for every family (idempotent; appends after paths from extra_model_paths.yaml)."""
    for name in MODEL_FOLDERS:
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, exts = folder_paths.folder_names_and_paths[name]
        if not exts:  # a folder created by add_model_folder_path has no extension filter
            folder_paths.folder_names_and_paths[name] = (paths, set(MODEL_SUFFIXES))


def searched(folder: str) -> str:
    try:
        paths = folder_paths.get_folder_paths(folder)
    except KeyError:
        paths = []
    return ", ".join(paths) if paths else f"(no '{folder}' folder is registered)"


def model_list(folder: str) -> list[str]:
    """Files in the folder, for a Combo input. Never raises (an unregistered folder gives [])."""
    try:
        return folder_paths.get_filename_list(folder)
    except KeyError:
        return []


def model_dirs(folder: str, required: Sequence[str]) -> list[str]:
    """Sub-folders (relative names) of the registered ``folder`` paths that contain every entry of ``required``
    (e.g. SeeSR's ``unet`` and ``controlnet``). The folder itself is listed as ``.`` when it qualifies."""
    out: list[str] = []
    for base in folder_list(folder):
        root = Path(base)
        if not root.is_dir():
            continue
        for d in sorted([root, *[p for p in root.rglob("*") if p.is_dir()]]):
            if all((d / r).exists() for r in required):
                rel = d.relative_to(root).as_posix() or "."
                if rel not in out:
                    out.append(rel)
    return out


def folder_list(folder: str) -> list[str]:
    """The registered paths of a model folder ([] when it is not registered)."""
    try:
        return list(folder_paths.get_folder_paths(folder))
    except KeyError:
        return []


def resolve_dir(folder: str, name: str, title: str) -> Path:
    for base in folder_list(folder):
        cand = Path(base) / name
        if cand.is_dir():
            return cand
    raise FileNotFoundError(f"{title} folder '{name}' was not found in the '{folder}' model folders "
                            f"searched: {searched(folder)}.")


def resolve_file(folder: str, name: str, title: str) -> str:
    """Full path of ``name`` in ``folder`` or an error naming the model and the folders searched."""
    path = folder_paths.get_full_path(folder, name) if name else None
    if path is None:
        raise FileNotFoundError(
            f"{title} file '{name}' was not found. Put it in one of the '{folder}' model folders searched: "
            f"{searched(folder)} (see the AwareRestore README for download links).")
    return path


def load_checked(folder: str, name: str, family: str | tuple[str, ...]) -> tuple[dict[str, torch.Tensor], str]:
    """Load ``name`` from ``folder`` safely and check that it belongs to ``family``."""
    fam = (family,) if isinstance(family, str) else family
    title = " or ".join(FAMILIES[f].title for f in fam)
    path = resolve_file(folder, name, title)
    sd = load_state_dict(path)
    try:
        require_family(sd, fam, source=path, folder=folder)
    except WrongModelError as exc:
        raise WrongModelError(f"{exc} Folders searched: {searched(folder)}.") from None
    return sd, path


# ----------------------------------------------------------------------------------------------- devices
def compute_dtype(supported: Sequence[torch.dtype] = (torch.bfloat16, torch.float16, torch.float32),
                  model_params: int = 0, device: torch.device | None = None) -> torch.dtype:
    """Pick bf16/fp16/fp32 for the ComfyUI device among the dtypes a model supports (fp32 on CPU)."""
    device = device or mm.get_torch_device()
    if torch.bfloat16 in supported and mm.should_use_bf16(device, model_params=model_params):
        return torch.bfloat16
    if torch.float16 in supported and mm.should_use_fp16(device, model_params=model_params):
        return torch.float16
    return torch.float32


def wrap_model(module: torch.nn.Module) -> comfy.model_patcher.ModelPatcher:
    """Wrap a core module (kept on the offload device) in ComfyUI's ModelPatcher."""
    module.eval().requires_grad_(False)
    offload = mm.unet_offload_device()
    module.to(offload)
    return comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=offload)


def load_model(patcher: comfy.model_patcher.ModelPatcher, memory_required: int = 0) -> torch.nn.Module:
    """Load through ComfyUI's memory manager (may evict other models) and return the module on its device."""
    mm.load_models_gpu([patcher], memory_required=int(memory_required))
    return patcher.model


def expect(value: object, cls: type, socket: str, io_type: str, source: str):
    """Check what arrived on a custom socket; a wrong type names the socket type and the node it comes from."""
    if not isinstance(value, cls):
        raise TypeError(f"the '{socket}' input must be a {io_type} from '{source}'; got {type(value).__name__}")
    return value


def load_payload(payload, module_cls: type, memory_required: int = 0):
    """Load the module of a loader node's payload (``.patcher``) and check its class."""
    module = load_model(payload.patcher, memory_required=memory_required)
    if not isinstance(module, module_cls):
        raise TypeError(f"the model socket holds a {type(module).__name__}, not a {module_cls.__name__}")
    return module


def model_device(module: torch.nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def model_dtype(module: torch.nn.Module) -> torch.dtype:
    p = next(module.parameters(), None)
    return p.dtype if p is not None else torch.float32


# ----------------------------------------------------------------------------------------------- progress
def progress_callback(total: int = 1) -> Progress:
    """``progress(done, total)`` driving a ComfyUI ProgressBar; raises if the user interrupted."""
    bar = comfy.utils.ProgressBar(max(int(total), 1))

    def progress(done: int, total_: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(int(done), int(total_))

    return progress


def check_interrupt() -> None:
    mm.throw_exception_if_processing_interrupted()


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, mm.OOM_EXCEPTION)


# ----------------------------------------------------------------------------------------------- images
def image_to_bchw(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IMAGE ``[B,H,W,C]`` → (RGB ``[B,3,H,W]`` float32, alpha ``[B,1,H,W]`` or None)."""
    return core_image.from_comfy(image)


def bchw_to_image(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """``[B,3,H,W]`` (+ alpha, resized when needed) → IMAGE ``[B,H,W,C]`` clamped to [0,1] on CPU."""
    return core_image.to_comfy(rgb, alpha)


def broadcast_batch(x: torch.Tensor, batch: int, what: str) -> torch.Tensor:
    """Repeat a batch of 1 to ``batch``; a batch of ``batch`` passes; anything else is an error."""
    if x.shape[0] == batch:
        return x
    if x.shape[0] == 1:
        return x.expand(batch, *x.shape[1:])
    raise ValueError(f"the {what} batch has {x.shape[0]} images but the image batch has {batch}; "
                     f"give one {what} for all images or one per image")

