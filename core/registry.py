"""The list of architectures (one per kind of checkpoint file, see :mod:`.arch`) and the lookups built on it:
detect a state dict's family, describe what a file looks like, require a family, load a file.

Family modules register nothing at import; the list is assembled on first use from each family's ``arch``
module, so this module stays importable from inside the families.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable, Iterable, Mapping

import torch

from .arch import Architecture, ModelDescriptor
from .checkpoint import load_state_dict
from .errors import WrongModelError
from .shapes import has_prefix, key_set

FAMILY_MODULES = ("daclip", "irsde", "ram", "seesr", "ssen")


@functools.cache
def _architectures() -> tuple[Architecture, ...]:
    out: list[Architecture] = []
    for fam in FAMILY_MODULES:
        module = importlib.import_module(f".{fam}.arch", __package__)
        out.extend(module.ARCHITECTURES)
    return tuple(out)


def architectures() -> tuple[Architecture, ...]:
    """Every architecture, in detection order."""
    return _architectures()


def get(arch_id: str) -> Architecture:
    for a in _architectures():
        if a.id == arch_id:
            return a
    raise KeyError(f"unknown architecture {arch_id!r}; known: {', '.join(a.id for a in _architectures())}")


# Files users commonly put in the wrong place: recognised only to make the error message precise.
_FOREIGN: tuple[tuple[str, Callable[[frozenset[str]], bool]], ...] = (
    ("a Stable Diffusion checkpoint", lambda k: has_prefix(k, "model.diffusion_model.")),
    ("a plain CLIP / open_clip model", lambda k: has_prefix(k, "visual.transformer.", "text_model.")),
    ("a diffusers UNet without SeeSR's image cross-attention",
     lambda k: "conv_in.weight" in k and has_prefix(k, "down_blocks.")),
    ("a VAE", lambda k: has_prefix(k, "encoder.down.", "first_stage_model.")),
)


def detect(sd: Mapping[str, torch.Tensor] | Iterable[str]) -> Architecture | None:
    """The architecture whose ``detect`` accepts the keys, or None."""
    keys = key_set(sd)
    for a in _architectures():
        if a.detect(keys):
            return a
    return None


def detect_family(sd: Mapping[str, torch.Tensor] | Iterable[str]) -> str | None:
    """Id of the architecture the keys belong to, or None."""
    a = detect(sd)
    return None if a is None else a.id


def describe(sd: Mapping[str, torch.Tensor] | Iterable[str]) -> str:
    """A human description of what the keys look like (for error messages and ``aware-restore info``)."""
    keys = key_set(sd)
    a = detect(keys)
    if a is not None:
        return a.title
    for title, pred in _FOREIGN:
        if pred(keys):
            return title
    return "an unrecognised model"


def require(sd: Mapping[str, torch.Tensor], arch_id: str | tuple[str, ...], source: str = "<state dict>",
            folder: str | None = None) -> Architecture:
    """Check that ``sd`` belongs to ``arch_id`` (or one of several); return its architecture or raise a
    :class:`WrongModelError` naming what was expected, what the file looks like and the folder to use."""
    wanted = (arch_id,) if isinstance(arch_id, str) else tuple(arch_id)
    found = detect(sd)
    if found is not None and found.id in wanted:
        return found
    archs = [get(w) for w in wanted]
    titles = " or ".join(a.title for a in archs)
    folder = folder or archs[0].folder
    sample = ", ".join(sorted(sd.keys())[:5])
    raise WrongModelError(
        f"'{source}' is not a {titles} checkpoint: it looks like {describe(sd)} "
        f"({len(sd)} tensors; first keys: {sample}). Put the {titles} file in the 'models/{folder}' folder "
        f"and select it there.")


def require_family(sd: Mapping[str, torch.Tensor], family: str | tuple[str, ...], source: str = "<state dict>",
                   folder: str | None = None) -> str:
    """:func:`require`, returning the architecture id."""
    return require(sd, family, source, folder).id


def load(path_or_sd: str | os.PathLike | Mapping[str, torch.Tensor], arch_id: str | tuple[str, ...],
         dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu", folder: str | None = None,
         **options) -> ModelDescriptor:
    """Read a checkpoint safely (or take a state dict), check its family and load it strictly."""
    source = "<state dict>" if isinstance(path_or_sd, Mapping) else str(path_or_sd)
    sd = load_state_dict(path_or_sd)
    arch = require(sd, arch_id, source=source, folder=folder)
    return arch.load(sd, dtype=dtype, device=device, source=source, **options)
