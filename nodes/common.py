"""The one adapter between core/ and ComfyUI.

* model folders registered with ``folder_paths`` (appending, so ``extra_model_paths.yaml`` entries stay first);
* file lookup with errors that name the model expected and the folders searched;
* one payload type on every model socket (:class:`ModelPayload`: the core descriptor in a ComfyUI ``ModelPatcher``),
  loaded fully through ``load_models_gpu`` with the descriptor's memory estimate;
* compute dtype chosen with ComfyUI's ``should_use_bf16`` / ``should_use_fp16`` among the descriptor's dtypes;
* the schema parts nodes share: :class:`ModelSocket` / :class:`PayloadSocket` (a socket's input/output and payload
  check; for models also the execute prologue of a node that runs the model on an IMAGE batch), the loader widgets
  and the loader's result (:func:`loaded`);
* a plain ``progress(done, total)`` callable for core loops that drives ``comfy.utils.ProgressBar`` and checks
  for interruption;
* IMAGE ``[B,H,W,C]`` ↔ ``[B,3,H,W]`` conversion (alpha kept aside).

Nodes are convert → one core call → convert; validation, chunking, tiling and OOM back-off live in core.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import comfy.model_management as mm
import comfy.model_patcher
import comfy.utils
import folder_paths
import torch
from comfy_api.latest import io

from ..core import image as core_image
from ..core import registry
from ..core.arch import ModelDescriptor
from ..core.checkpoint import MODEL_SUFFIXES
from ..core.dtypes import DTYPE_NAMES, parse_dtype
from ..core.errors import PayloadError, WrongModelError
from ..core.paths import MODEL_FOLDERS

log = logging.getLogger(__name__)

CATEGORY = "AwareRestore"
Progress = Callable[[int, int], None]
DTYPE_OPTIONS = list(DTYPE_NAMES)
DTYPE_TOOLTIP = "Weight and compute dtype: auto = fp16/bf16 where the device supports it (ComfyUI decides), fp32 on CPU."


# ----------------------------------------------------------------------------------------------- folders
def register_model_folders() -> None:
    """Add ``models/<folder>`` for every family (idempotent; appends after paths from extra_model_paths.yaml)."""
    for name in MODEL_FOLDERS:
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, exts = folder_paths.folder_names_and_paths[name]
        if not exts:  # a folder created by add_model_folder_path has no extension filter
            folder_paths.folder_names_and_paths[name] = (paths, set(MODEL_SUFFIXES))


def folder_list(folder: str) -> list[str]:
    """The registered paths of a model folder ([] when it is not registered)."""
    try:
        return list(folder_paths.get_folder_paths(folder))
    except KeyError:
        return []


def searched(folder: str) -> str:
    paths = folder_list(folder)
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


def _inside(base: Path, name: str) -> Path | None:
    """``base/name`` when the name stays inside ``base`` (no ``..`` part, not absolute), else None. Checked on the
    name, not on the resolved path, so a folder the user symlinked into the models folder is found."""
    if not name or os.path.isabs(name) or Path(name).drive or ".." in Path(name.replace("\\", "/")).parts:
        return None
    return base / name


def resolve_dir(folder: str, name: str, title: str) -> Path:
    """A sub-folder ``name`` of the registered ``folder`` paths; names leaving the folder are refused."""
    for base in folder_list(folder):
        cand = _inside(Path(base), name)
        if cand is not None and cand.is_dir():
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


def load_file(folder: str, name: str, arch: str | tuple[str, ...], dtype: torch.dtype = torch.float32,
              **options) -> ModelDescriptor:
    """Read ``name`` from ``folder`` safely, check its family and load it strictly (core ``registry.load``);
    a file of another family names the folders searched."""
    ids = (arch,) if isinstance(arch, str) else tuple(arch)
    title = " or ".join(registry.get(a).title for a in ids)
    path = resolve_file(folder, name, title)
    with naming_folders(folder):
        return registry.load(path, ids, dtype=dtype, folder=folder, **options)


@contextmanager
def naming_folders(folder: str) -> Iterator[None]:
    """A :class:`WrongModelError` raised inside gets the folders searched added (the user put a file of another
    family in ``folder``)."""
    try:
        yield
    except WrongModelError as exc:
        raise WrongModelError(f"{exc} Folders searched: {searched(folder)}.") from None


# ----------------------------------------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelPayload:
    """What travels on every model socket of the pack: the core descriptor, its ComfyUI ModelPatcher (which the
    memory manager loads and offloads) and the name the user picked."""

    patcher: comfy.model_patcher.ModelPatcher
    descriptor: ModelDescriptor
    name: str

    @property
    def arch(self) -> str:
        return self.descriptor.arch

    @property
    def config(self):
        return self.descriptor.config


def compute_dtype(desc_or_dtypes: ModelDescriptor | Sequence[torch.dtype] = (torch.bfloat16, torch.float16,
                                                                              torch.float32),
                  model_params: int = 0, device: torch.device | None = None) -> torch.dtype:
    """Pick bf16/fp16/fp32 for the ComfyUI device among the dtypes a model supports (fp32 on CPU)."""
    supported = desc_or_dtypes.dtypes if isinstance(desc_or_dtypes, ModelDescriptor) else desc_or_dtypes
    device = device or mm.get_torch_device()
    if torch.bfloat16 in supported and mm.should_use_bf16(device, model_params=model_params):
        return torch.bfloat16
    if torch.float16 in supported and mm.should_use_fp16(device, model_params=model_params):
        return torch.float16
    return torch.float32


def widget_dtype(name: str | None, supported: Sequence[torch.dtype] = (torch.bfloat16, torch.float16, torch.float32),
                 model_params: int = 0) -> torch.dtype:
    """The dtype a loader's ``dtype`` widget asks for (``auto`` → :func:`compute_dtype`)."""
    return parse_dtype(name or "auto") or compute_dtype(supported, model_params)


def wrap(descriptor: ModelDescriptor, name: str) -> ModelPayload:
    """Put a loaded core model under ComfyUI's memory manager (kept on the offload device until used)."""
    module = descriptor.model
    module.eval().requires_grad_(False)
    offload = mm.unet_offload_device()
    module.to(offload)
    patcher = comfy.model_patcher.ModelPatcher(module, load_device=mm.get_torch_device(), offload_device=offload)
    return ModelPayload(patcher, descriptor, name)


def expect_model(value: object, socket: str, io_type: str, source: str, arch: str | tuple[str, ...]
                 ) -> ModelPayload:
    """Check what arrived on a model socket; a wrong payload names the socket type and the node it comes from."""
    ids = (arch,) if isinstance(arch, str) else tuple(arch)
    if not isinstance(value, ModelPayload) or value.arch not in ids:
        got = value.arch if isinstance(value, ModelPayload) else type(value).__name__
        raise PayloadError(f"the '{socket}' input must be a {io_type} from '{source}'; got {got}")
    return value


def expect(value: object, cls: type, socket: str, io_type: str, source: str):
    """Check a non-model payload (embeddings); a wrong type names the socket type and the node it comes from."""
    if not isinstance(value, cls):
        raise PayloadError(f"the '{socket}' input must be a {io_type} from '{source}'; got {type(value).__name__}")
    return value


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or wrapped callable without a signature
        return False


def load_models(*items: tuple[ModelPayload, int]) -> list[torch.nn.Module]:
    """Load ``(payload, activation bytes)`` pairs in one ``load_models_gpu`` call (so one model is not evicted
    to make room for the other); returns the modules on their devices.

    The models are plain ``torch.nn`` (no ``comfy.ops`` casting layers), so they are loaded fully
    (``force_full_load=True``): under memory pressure ComfyUI would otherwise leave the layers that do not fit on
    the offload device and the forward would mix devices. The argument is passed only where ``load_models_gpu``
    has it (older ComfyUI lacks it)."""
    patchers = [p.patcher for p, _ in items]
    kwargs = {"memory_required": int(sum(m for _, m in items))}
    if _accepts(mm.load_models_gpu, "force_full_load"):
        kwargs["force_full_load"] = True
    mm.load_models_gpu(patchers, **kwargs)
    return [p.model for p in patchers]


# ----------------------------------------------------------------------------------------------- progress
# Interrupts, OOM and progress follow core's current helpers, found by feature test (never by version):
# ``InterruptProcessingException`` is a BaseException in newer cores (``except Exception`` never swallows it; the
# pack's loops only catch Exception), ``mm.is_oom`` also knows accelerator "out of memory" errors, and newer
# ProgressBars throttle what they send (the pack updates on every step and lets core decide).
def is_oom(exc: BaseException) -> bool:
    """Core's out-of-memory test (``mm.is_oom`` where it exists, else its ``OOM_EXCEPTION``)."""
    test = getattr(mm, "is_oom", None)
    if callable(test):
        return bool(test(exc))
    return isinstance(exc, getattr(mm, "OOM_EXCEPTION", torch.OutOfMemoryError))


def progress_callback(total: int = 1) -> Progress:
    """``progress(done, total)`` driving a ComfyUI ProgressBar; raises core's interrupt if the user interrupted."""
    bar = comfy.utils.ProgressBar(max(int(total), 1))

    def progress(done: int, total_: int) -> None:
        mm.throw_exception_if_processing_interrupted()
        bar.update_absolute(int(done), int(total_))

    return progress


# ----------------------------------------------------------------------------------------------- images
def image_to_bchw(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """IMAGE ``[B,H,W,C]`` → (RGB ``[B,3,H,W]`` float32, alpha ``[B,1,H,W]`` or None)."""
    return core_image.from_comfy(image)


def bchw_to_image(rgb: torch.Tensor, alpha: torch.Tensor | None = None) -> torch.Tensor:
    """``[B,3,H,W]`` (+ alpha, resized when needed) → IMAGE ``[B,H,W,C]`` clamped to [0,1] on CPU."""
    return core_image.to_comfy(rgb, alpha)


# ----------------------------------------------------------------------------------------------- schema parts
@dataclass(frozen=True)
class Socket:
    """A socket type of the pack, written once: its ComfyUI type, the socket name (input id and output name) and
    the node whose output it is (for tooltips and errors). Schema parts and payload checks come from it."""

    comfy_type: type  # an io.Custom type
    name: str
    source: str  # display name of the node that makes the payload

    def input(self, tooltip: str | None = None, **options) -> io.Input:
        """The socket as a node input; the tooltip says where it comes from unless one is given."""
        return self.comfy_type.Input(self.name, tooltip=tooltip or f"From '{self.source}'.", **options)

    def output(self, tooltip: str) -> io.Output:
        return self.comfy_type.Output(display_name=self.name, tooltip=tooltip)


@dataclass(frozen=True)
class PayloadSocket(Socket):
    """A socket carrying a plain payload object (embeddings, a size plan, a map)."""

    payload: type

    def check(self, value: object):
        """The payload on the socket, or an error naming the socket type and the node it comes from."""
        return expect(value, self.payload, self.name, self.comfy_type.io_type, self.source)


@dataclass(frozen=True)
class ModelSocket(Socket):
    """A model socket (:class:`ModelPayload` of one or more core architectures). Besides the schema parts and the
    check it gives the prologue of a node that runs the model on an IMAGE batch, so they cannot drift apart."""

    arch: str | tuple[str, ...]

    def image_inputs(self, image_tooltip: str) -> list[io.Input]:
        """The model input and the IMAGE it runs on, the inputs :meth:`prepare` reads."""
        return [self.input(), io.Image.Input("image", tooltip=image_tooltip)]

    def check(self, value: object) -> ModelPayload:
        """The payload on the socket, or an error naming the socket type and its loader."""
        return expect_model(value, self.name, self.comfy_type.io_type, self.source, self.arch)

    def reserve(self, value: object, batch: int = 1) -> tuple[ModelPayload, int]:
        """A checked payload and the activation bytes to reserve for ``batch`` inputs (a :func:`load_models` item)."""
        payload = self.check(value)
        return payload, payload.descriptor.memory_for(batch)

    def prepare(self, value: object, image: torch.Tensor) -> tuple[torch.nn.Module, torch.Tensor, Progress]:
        """What a node running the model on an IMAGE batch starts with: the model loaded for ``B`` images, the
        IMAGE as ``[B,3,H,W]`` (alpha dropped) and a progress callback over the ``B`` images."""
        rgb, _ = image_to_bchw(image)
        (module,) = load_models(self.reserve(value, rgb.shape[0]))
        return module, rgb, progress_callback(rgb.shape[0])


def model_name_input(folder: str, tooltip: str) -> io.Input:
    """A loader's ``model_name`` widget: the files of ``folder``."""
    return io.Combo.Input("model_name", options=model_list(folder), tooltip=tooltip)


def dtype_input(tooltip: str = DTYPE_TOOLTIP) -> io.Input:
    """A loader's ``dtype`` widget (``auto`` or one of :data:`DTYPE_OPTIONS`, read by :func:`widget_dtype`)."""
    return io.Combo.Input("dtype", options=DTYPE_OPTIONS, default="auto", tooltip=tooltip)


def loaded(folder: str, name: str, arch: str | tuple[str, ...], dtype: torch.dtype = torch.float32,
           **options) -> io.NodeOutput:
    """A loader node's result: ``name`` read from ``folder`` (:func:`load_file`), under ComfyUI's memory manager."""
    return model_output(load_file(folder, name, arch, dtype, **options), name)


def model_output(descriptor: ModelDescriptor, name: str) -> io.NodeOutput:
    """A loader node's result for a model it loaded itself: the descriptor under ComfyUI's memory manager
    (:func:`wrap`), logged."""
    log.info("%s '%s' from %s (%s): %s", descriptor.title, name, descriptor.source, descriptor.dtype,
             descriptor.config)
    return io.NodeOutput(wrap(descriptor, name))
