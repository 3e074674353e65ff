"""Safe checkpoint loading and saving.

* The format is read from the file's first bytes, not its name (:func:`sniff`): a safetensors file named ``.pth``
  is read as safetensors (and the rename suggested in the log), a torch file named ``.safetensors`` as a torch file.
* safetensors files are memory-mapped (``safetensors.torch.load_file`` maps the file).
* torch files are loaded with ``torch.load(weights_only=True, mmap=True)`` under an explicit, minimal allow-list
  of extra globals (the official DA-CLIP training checkpoint stores numpy scalars in its optimizer state). Nothing
  outside the allow-list is ever unpickled, so a malicious file whose ``__reduce__`` runs a command is refused
  before anything runs.
* A file that cannot be read raises one error, :class:`CheckpointError`, whose ``kind`` says what the file looks
  like and whose one-line message gives the next step for that case: ``missing`` (or a folder), ``empty``,
  ``text`` (Git LFS pointer, HTML page, other text), ``truncated`` (zip, safetensors or pickle cut off),
  ``safetensors`` (damaged header), ``zip`` (an archive that is not a torch checkpoint, or a damaged one),
  ``pickle-globals`` (needs code outside the allow-list), ``not-a-state-dict``, ``unknown`` (random bytes).
* Common training wrappers are unwrapped: ``state_dict`` / ``model`` / ``params_ema`` / ``params`` /
  ``module`` and a ``module.`` (DDP) key prefix.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .errors import CheckpointError
from .sources import OFFICIAL

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
PathLike = str | os.PathLike

SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
MODEL_SUFFIXES = SAFETENSORS_SUFFIXES + PICKLE_SUFFIXES

# Wrapper keys seen in released checkpoints, tried in this order.
_WRAPPER_KEYS = ("state_dict", "params_ema", "params", "model", "module", "net", "network")


__all__ = [
    "MODEL_SUFFIXES",
    "CheckpointError",
    "load_state_dict",
    "meta_state_dict_from_key_list",
    "problem",
    "read_metadata",
    "save_safetensors",
    "sniff",
    "unwrap_state_dict",
]


def _torch_version() -> tuple[int, int]:
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _allow_list_context() -> contextlib.AbstractContextManager:
    """``torch.serialization.safe_globals(allow-list)`` where this torch has it (2.5+); ``(callable, name)``
    aliases (the numpy-1.x name of a numpy-2 function) only where it reads them (2.6+). On older torch the
    plain weights still load; a file that needs the extra globals gets the 'pickle-globals' error."""
    ctx = getattr(torch.serialization, "safe_globals", None)
    if ctx is None:
        return contextlib.nullcontext()
    allowed = _numpy_allow_list()
    if _torch_version() < (2, 6):
        allowed = [g for g in allowed if not isinstance(g, tuple)]
    return ctx(allowed)


def _numpy_allow_list() -> list[Any]:
    """Extra globals allowed in pickles: numpy scalars/dtypes (optimizer state of open_clip checkpoints)
    and ``_codecs.encode`` (used by numpy scalar pickles). Nothing that can run code."""
    import codecs

    allowed: list[Any] = [codecs.encode]
    try:
        import numpy as np
    except ImportError:  # numpy is a hard dependency, but stay robust
        return allowed
    try:
        from numpy._core.multiarray import scalar  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    # The official DA-CLIP file was written by numpy 1.x, which names the function numpy.core.multiarray.scalar.
    allowed += [scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    allowed.append(np.dtype)
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float64DType", "Float32DType", "Float16DType", "Int64DType", "Int32DType", "BoolDType"):
            cls = getattr(dtypes, name, None)
            if cls is not None:
                allowed.append(cls)
    return allowed


# ----------------------------------------------------------------------------------------------- what a file is
_SNIFF = 4096
_GLOBAL = re.compile(r"unsupported (?:global: )?GLOBAL (\S+)", re.IGNORECASE)  # blocked / not allowed globals


def _fail(path: Path, kind: str, looks: str, step: str) -> CheckpointError:
    return CheckpointError(f"Cannot read '{path}': {looks}. {step}", kind=kind, path=str(path))


def _again(path: Path) -> str:
    """The 'download it again' advice, naming the pack's download command for official file names."""
    if path.name in OFFICIAL and OFFICIAL[path.name].repo_id is not None:
        return (f"Delete it and download it again (`aware-restore download {path.name}` or the 'Download Official "
                f"Weights' node)")
    return "Delete it and download or copy it again"


def _text_kind(path: Path, head: bytes) -> CheckpointError | None:
    """A CheckpointError describing a text file, or None when ``head`` is not text."""
    if b"\0" in head:
        return None
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 4:  # not just a character cut by the sniff window
            return None
        text = head[:exc.start].decode("utf-8")
    printable = sum(c.isprintable() or c in "\r\n\t" for c in text)
    if not text or printable < 0.95 * len(text):
        return None
    first = text.strip().splitlines()[0][:60] if text.strip() else ""
    low = text.lstrip().lower()
    if low.startswith("version https://git-lfs"):
        return _fail(path, "text", "it is a Git LFS pointer (a small text file standing in for the real file), not "
                     "the model", "Fetch the real file (`git lfs pull` in the repository it came from) or download it "
                     "from the model page")
    if low.startswith(("<!doctype html", "<html", "<?xml", "<head")) or "<html" in low[:512]:
        return _fail(path, "text", "it is a web page (HTML), not a model; a login, error or 'virus scan' "
                     "confirmation page was saved instead of the file", "Download the file itself again (on Google "
                     "Drive confirm 'Download anyway')")
    return _fail(path, "text", f"it is a text file (it starts with {first!r}), not a model",
                 "Put the model's weight file here instead")


def _safetensors_kind(path: Path, head: bytes, size: int) -> str | CheckpointError | None:
    """'safetensors', a CheckpointError (truncated / damaged header), or None when ``head`` is not safetensors."""
    if len(head) < 9 or head[8:9] != b"{":
        return None
    n = struct.unpack("<Q", head[:8])[0]
    if n < 2 or n > 100 * 2**20:
        return None
    if 8 + n > size:
        return _fail(path, "truncated", f"it is a safetensors file cut off after {size} bytes (its header alone "
                     f"needs {8 + n})", _again(path))
    with open(path, "rb") as f:
        f.seek(8)
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        return _fail(path, "safetensors", f"it is a safetensors file with a damaged header ({type(exc).__name__})",
                     _again(path))
    need = 8 + n + max(ends, default=0)
    if need > size:
        return _fail(path, "truncated", f"it is a safetensors file cut off after {size} of its {need} bytes",
                     _again(path))
    return "safetensors"


def sniff(path: PathLike) -> str:
    """What ``path`` holds, from its first bytes (not its extension): ``safetensors``, ``torch-zip`` (torch >= 1.6
    archive) or ``pickle`` (legacy torch file). Anything else raises a :class:`CheckpointError` whose ``kind`` says
    what the file looks like (``missing``, ``empty``, ``text``, ``truncated``, ``safetensors`` (damaged header),
    ``zip`` (an archive that is not a torch checkpoint), ``unknown``) and whose message gives the next step."""
    path = Path(path)
    if path.is_dir():
        raise _fail(path, "missing", "it is a folder, not a file", "Select the model file inside it")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint file not found: '{path}'", kind="missing", path=str(path))
    size = path.stat().st_size
    if size == 0:
        raise _fail(path, "empty", "the file is empty (0 bytes); a download or copy did not finish", _again(path))
    with open(path, "rb") as f:
        head = f.read(_SNIFF)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        if not zipfile.is_zipfile(path):
            raise _fail(path, "truncated", f"it is a zip archive (the torch format) cut off after {size} bytes, "
                        "before its table of contents", _again(path))
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
        if not any(n.endswith("data.pkl") for n in names):
            raise _fail(path, "zip", f"it is a zip archive but not a torch checkpoint (it holds "
                        f"{', '.join(names[:3]) or 'nothing'}{', ...' if len(names) > 3 else ''})",
                        "Unpack it and select the model file inside")
        return "torch-zip"
    st = _safetensors_kind(path, head, size)
    if isinstance(st, CheckpointError):
        raise st
    if st is not None:
        return st
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    text = _text_kind(path, head)
    if text is not None:
        raise text
    raise _fail(path, "unknown", f"it is neither safetensors nor a torch checkpoint (first bytes: {head[:8].hex(' ')})"
                f", so it is probably damaged", _again(path))


def problem(path: PathLike) -> CheckpointError | None:
    """The :class:`CheckpointError` :func:`sniff` raises for ``path``, or None when the file looks readable."""
    try:
        sniff(path)
    except CheckpointError as exc:
        return exc
    return None


def _load_pickle(path: Path, fmt: str) -> Any:
    try:
        with _allow_list_context():
            if path.suffix.lower() in SAFETENSORS_SUFFIXES:  # torch.load would dispatch on the name: pass a handle
                with open(path, "rb") as f:
                    return torch.load(f, map_location="cpu", weights_only=True)
            return torch.load(path, map_location="cpu", weights_only=True, mmap=fmt == "torch-zip")
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        found = _GLOBAL.search(msg)
        if found:
            raise _fail(path, "pickle-globals", f"it is a pickle that needs globals outside the safe allow-list "
                        f"({found.group(1)}); only plain weights are unpickled, so nothing in it was run",
                        "If you trust the file and where it came from, re-save its tensors as .safetensors in "
                        "your own Python session (load it with the full unpickler there, then "
                        "safetensors.torch.save_file) and use that file"
                        ) from None
        if "truncated" in msg.lower() or "EOF" in msg:
            raise _fail(path, "truncated", "it is a torch pickle that ends before its data does", _again(path)
                        ) from None
        raise _fail(path, "unknown", "it is a Python pickle but not a torch checkpoint (the safe loader cannot read "
                    "it)", "Save the weights with torch.save(state_dict) or as .safetensors") from None
    except EOFError:
        raise _fail(path, "truncated", "it is a torch pickle that ends before its data does", _again(path)) from None
    except (RuntimeError, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        low = line.lower()
        if "eof" in low or "truncat" in low or "central directory" in low:
            raise _fail(path, "truncated", f"it is a torch checkpoint that ends before its data does ({line})",
                        _again(path)) from None
        raise _fail(path, "zip" if fmt == "torch-zip" else "unknown",
                    f"it is a damaged torch checkpoint ({type(exc).__name__}: {line})", _again(path)) from None


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise _fail(path, "safetensors", f"it is a damaged safetensors file ({line})", _again(path)) from None


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def unwrap_state_dict(obj: Any, source: str = "<state dict>") -> StateDict:
    """Return the tensor dict inside a training checkpoint, with ``module.`` prefixes removed."""
    seen = 0
    while not _is_tensor_dict(obj):
        if not isinstance(obj, Mapping) or seen > 4:
            raise CheckpointError(f"'{source}' holds no tensor state dict (found {type(obj).__name__}). Select the "
                                  "model's weight file", kind="not-a-state-dict", path=source)
        inner = next((obj[k] for k in _WRAPPER_KEYS if k in obj and isinstance(obj[k], Mapping)), None)
        if inner is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
            if tensors and all(isinstance(k, str) for k in tensors):
                obj = tensors  # e.g. a dict mixing tensors with scalar metadata
                break
            raise CheckpointError(
                f"'{source}' holds no tensor state dict; top-level keys: {sorted(map(str, obj))[:8]}. Select the "
                "model's weight file (not an optimizer state or a config)", kind="not-a-state-dict", path=source)
        obj = inner
        seen += 1
    sd = dict(obj)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def load_state_dict(path_or_sd: PathLike | Mapping[str, torch.Tensor]) -> StateDict:
    """Load a state dict safely from a file (or pass a mapping through ``unwrap_state_dict``)."""
    if isinstance(path_or_sd, Mapping):
        return unwrap_state_dict(path_or_sd)
    path = Path(path_or_sd)
    fmt = sniff(path)  # by content: a misnamed file is read as what it is
    suffix = path.suffix.lower()
    if fmt == "safetensors":
        if suffix not in SAFETENSORS_SUFFIXES:
            log.info("'%s' is a safetensors file under a '%s' name; read as safetensors (rename it to "
                     ".safetensors)", path, suffix)
        return unwrap_state_dict(_load_safetensors(path), str(path))
    if suffix in SAFETENSORS_SUFFIXES:
        log.info("'%s' is a torch checkpoint under a '%s' name; read safely as a torch checkpoint", path, suffix)
    return unwrap_state_dict(_load_pickle(path, fmt), str(path))


def read_metadata(path: PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file ({} for other files)."""
    path = Path(path)
    if sniff(path) != "safetensors":
        return {}
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata() or {})


def save_safetensors(sd: Mapping[str, torch.Tensor], path: PathLike, metadata: Mapping[str, Any] | None = None,
                     dtype: torch.dtype | None = None) -> Path:
    """Write ``sd`` as safetensors: tensors made contiguous and unshared, floats optionally cast to ``dtype``.
    Non-string metadata values are JSON-encoded."""
    from safetensors.torch import save_file

    out: StateDict = {}
    for k, v in sd.items():
        t = v.detach().to("cpu")
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        out[k] = t.contiguous().clone()
    meta = {"format": "pt"}
    for k, v in (metadata or {}).items():
        meta[str(k)] = v if isinstance(v, str) else json.dumps(v)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(out, str(path), metadata=meta)
    return path



def meta_state_dict_from_key_list(path: PathLike, dtype: torch.dtype = torch.float32) -> StateDict:
    """Build a meta-device state dict from a ``key<TAB>[shape]`` listing (the real-size key lists)."""
    sd: StateDict = {}
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        key, shape = line.split("\t")
        sd[key] = torch.empty(json.loads(shape), dtype=dtype, device="meta")
    return sd
