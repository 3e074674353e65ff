"""The architecture contract every model family implements (after spandrel's ``Architecture`` /
``ModelDescriptor``).

Each family module exports one :class:`Architecture` per kind of checkpoint file it reads:

* ``id``, ``title``, ``folder`` — what it is called and which ComfyUI models folder its files live in;
* ``detect(keys) -> bool`` — a cheap test on the state-dict key set;
* ``keep(key) -> bool`` — the inference keys (what ``aware-restore convert`` writes);
* ``load(state_dict, dtype=..., device=...) -> ModelDescriptor`` — every hyper-parameter read from the tensor
  shapes (``infer_config``), the model built on the meta device and the tensors loaded strictly
  (:func:`strict_load`).

The :class:`ModelDescriptor` states what the loaded model supports — the dtypes it runs in, how tiling affects
its result, and a memory estimate for a batch at a size — so front ends never need family-specific knowledge.
``core.registry.ARCHITECTURES`` is the list of all of them.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from .errors import ConfigError, StrictLoadError, WrongModelError

log = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]
KeySet = frozenset[str]


class Tiling(str, enum.Enum):
    """How spatial tiling relates to the untiled result."""

    EXACT = "exact"              # the result does not depend on the tiling (up to float summation order)
    APPROXIMATE = "approximate"  # tiles change the result (global operations see one tile); measured per family
    INTERNAL = "internal"        # the family tiles its own latent/feature space (SeeSR's latent tiles)
    NONE = "none"                # the model sees a fixed-size resized input; tiling does not apply


def _keep_all(key: str) -> bool:
    return True


@dataclass(frozen=True)
class Architecture:
    """One kind of checkpoint file: how to recognise it and how to load it."""

    id: str
    title: str
    folder: str
    detect: Callable[[KeySet], bool]
    load: Callable[..., ModelDescriptor]
    keep: Callable[[str], bool] = _keep_all
    kind: str = "model"  # "model", or "adapter" (a LoRA that patches another architecture's weights)


@dataclass
class ModelDescriptor:
    """A loaded model and what it supports."""

    model: Any
    arch: str
    title: str
    config: Any
    source: str = "<state dict>"
    dtypes: tuple[torch.dtype, ...] = (torch.float32, torch.bfloat16, torch.float16)
    tiling: Tiling = Tiling.NONE
    memory: Callable[[int, tuple[int, int]], int] = field(default=lambda batch, size: 0, repr=False)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def params(self) -> int:
        m = self.model
        return sum(p.numel() for p in m.parameters()) if isinstance(m, torch.nn.Module) else 0

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.model.parameters(), None) if isinstance(self.model, torch.nn.Module) else None
        return p.dtype if p is not None else torch.float32

    def memory_for(self, batch: int = 1, size: tuple[int, int] = (512, 512)) -> int:
        """Estimated activation bytes (beyond the weights) of one call on ``batch`` inputs of ``size``."""
        return int(self.memory(max(int(batch), 1), (int(size[0]), int(size[1]))))


def _mismatch(own: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]) -> list[str]:
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
    if bad:
        k = bad[0]
        parts.append(f"{len(bad)} of another shape (e.g. {k}: file {list(sd[k].shape)} vs model "
                     f"{list(own[k].shape)})")
    return parts


def strict_load(model: torch.nn.Module, sd: Mapping[str, torch.Tensor], *, source: str, title: str,
                config: Any = None, dtype: torch.dtype | None = None, device: torch.device | str | None = None
                ) -> torch.nn.Module:
    """Load ``sd`` into ``model`` (built on the meta device) with ``strict=True`` and ``assign=True``.

    Floating tensors are cast to ``dtype`` (when given) and moved to ``device``; the result is in eval mode
    with gradients off. A key or shape mismatch raises :class:`StrictLoadError` naming the file, the model and
    what did not fit. Meta-device state dicts (real-size key lists) load without allocating anything.
    """
    own = model.state_dict()
    problems = _mismatch(own, sd)
    if problems:
        cfg = f" ({config})" if config is not None else ""
        raise StrictLoadError(f"'{source}' does not fit the {title} model built from its shapes{cfg}: "
                              + "; ".join(problems))
    meta = all(v.is_meta for v in sd.values())
    weights: StateDict = {}
    for k, v in sd.items():
        want = own[k].dtype if not v.is_floating_point() else (dtype or v.dtype)
        if meta:
            weights[k] = v.to(dtype=want)
        else:
            # copy=True: fresh, aligned tensors that never alias the caller's dict or a memory-mapped file
            weights[k] = v.to(device=device or "cpu", dtype=want, copy=True)
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:  # e.g. a dtype the module cannot take
        raise StrictLoadError(f"'{source}' could not be loaded into the {title} model: "
                              f"{str(exc).splitlines()[0]}") from None
    return model.eval().requires_grad_(False)


def infer_or_raise(infer: Callable[[Mapping[str, torch.Tensor]], Any], sd: Mapping[str, torch.Tensor],
                   source: str, title: str) -> Any:
    """``infer(sd)`` with every failure reported as a :class:`ConfigError` naming the file."""
    try:
        return infer(sd)
    except ConfigError as exc:
        raise ConfigError(f"'{source}' ({title}): {exc}") from None
    except (KeyError, IndexError, ValueError) as exc:
        if isinstance(exc, WrongModelError):
            raise
        raise ConfigError(f"'{source}' does not describe a {title} model this code can build: "
                          f"{type(exc).__name__}: {exc}") from None
