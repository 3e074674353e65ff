"""SeeSR's image cross-attention ("RCA") — the one implementation, for every front end.

SeeSR adds, right after every text transformer of its SD-2 UNet (16 of them) and of its ControlNet (7), a second
one-layer transformer whose cross-attention reads the DAPE image embeddings ``[B, N, 512]`` instead of the text
states. :class:`RCABlock` is that block in plain torch, with the checkpoint's key layout
(``norm``, ``proj_in``, ``transformer_blocks.<i>.{norm1,attn1,norm2,attn2,norm3,ff}``, ``proj_out``: the layout of a
diffusers ``Transformer2DModel``), built from two pluggable pieces:

* ``ops``: the layer classes (``Linear``, ``Conv2d``, ``GroupNorm``, ``LayerNorm``) — ``torch.nn`` by default;
  ComfyUI passes ``comfy.ops.manual_cast`` so its memory manager can cast and offload the weights;
* ``attention(q, k, v, heads)`` on ``[B, T, heads·dim]`` tensors — :func:`sdpa_attention` by default; ComfyUI
  passes its ``optimized_attention`` (xformers / sage / flash / split / sub-quadratic, whatever it selected).

Two front ends hang the blocks in:

* :func:`attach_rca` (library / CLI, stock diffusers ``UNet2DConditionModel`` / ``ControlNetModel``): registers the
  blocks as ``<block>.image_attentions.<i>`` and adds forward hooks (nothing of diffusers is modified);
* :class:`RCASet` (ComfyUI native path): only the RCA blocks of one release file, in the same key layout, with the
  module path of the ComfyUI ``SpatialTransformer`` each one follows (:mod:`.layout`); the node layer hooks them on
  ComfyUI's own UNet and ControlNet.

Which block follows which text transformer, with how many heads, is read from the release ``config.json`` by
:func:`.layout.rca_entries` for both front ends.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, MissingImageStatesError
from .layout import RCAEntry, RCASpec, rca_entries

Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, int], torch.Tensor]


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Multi-head attention on ``[B, T, heads·dim]`` (scale 1/√dim), as diffusers' and ComfyUI's default."""
    b, _, inner = q.shape
    d = inner // heads
    q, k, v = (t.reshape(b, -1, heads, d).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return out.transpose(1, 2).reshape(b, -1, inner)


class _Attention(nn.Module):
    """q/k/v projections without bias, ``to_out.0`` with bias (``to_out.1`` is a parameter-free dropout)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, head_dim: int, ops, dtype, device):
        super().__init__()
        inner = heads * head_dim
        self.heads = heads
        self.to_q = ops.Linear(query_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_k = ops.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_v = ops.Linear(context_dim, inner, bias=False, dtype=dtype, device=device)
        self.to_out = nn.ModuleList([ops.Linear(inner, query_dim, dtype=dtype, device=device)])
        self.attention: Attention = sdpa_attention

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        out = self.attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads)
        return self.to_out[0](out)


class _GEGLU(nn.Module):
    def __init__(self, dim: int, inner: int, ops, dtype, device):
        super().__init__()
        self.proj = ops.Linear(dim, inner * 2, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, gate = self.proj(x).chunk(2, dim=-1)
        return h * F.gelu(gate)


class _FeedForward(nn.Module):
    """``net.0`` GEGLU (×4 width), ``net.1`` dropout (no parameters), ``net.2`` output projection."""

    def __init__(self, dim: int, ops, dtype, device, mult: int = 4):
        super().__init__()
        self.net = nn.ModuleList([_GEGLU(dim, dim * mult, ops, dtype, device), nn.Identity(),
                                  ops.Linear(dim * mult, dim, dtype=dtype, device=device)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


class _TransformerBlock(nn.Module):
    """Pre-norm self-attention, cross-attention to the image states, GEGLU feed-forward (LayerNorm eps 1e-5)."""

    def __init__(self, dim: int, spec: RCASpec, ops, dtype, device):
        super().__init__()
        self.norm1 = ops.LayerNorm(dim, eps=1e-5, dtype=dtype, device=device)
        self.attn1 = _Attention(dim, dim, spec.heads, spec.head_dim, ops, dtype, device)
        self.norm2 = ops.LayerNorm(dim, eps=1e-5, dtype=dtype, device=device)
        self.attn2 = _Attention(dim, spec.context_dim, spec.heads, spec.head_dim, ops, dtype, device)
        self.norm3 = ops.LayerNorm(dim, eps=1e-5, dtype=dtype, device=device)
        self.ff = _FeedForward(dim, ops, dtype, device)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class RCABlock(nn.Module):
    """One RCA block: GroupNorm (eps 1e-6) → projection in → transformer blocks on the image states → projection
    out → plus the input. ``forward(x [B,C,H,W], context [B,N,512]) -> [B,C,H,W]``."""

    def __init__(self, spec: RCASpec, ops: Any = nn, attention: Attention | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.spec = spec
        c, inner = spec.channels, spec.heads * spec.head_dim
        self.norm = ops.GroupNorm(spec.groups, c, eps=1e-6, affine=True, dtype=dtype, device=device)
        if spec.linear:
            self.proj_in = ops.Linear(c, inner, dtype=dtype, device=device)
            self.proj_out = ops.Linear(inner, c, dtype=dtype, device=device)
        else:
            self.proj_in = ops.Conv2d(c, inner, 1, dtype=dtype, device=device)
            self.proj_out = ops.Conv2d(inner, c, 1, dtype=dtype, device=device)
        self.transformer_blocks = nn.ModuleList([_TransformerBlock(inner, spec, ops, dtype, device)
                                                 for _ in range(spec.depth)])
        if attention is not None:
            set_attention(self, attention)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        context = context.to(x.dtype)
        y = self.norm(x)
        if self.spec.linear:
            y = self.proj_in(y.permute(0, 2, 3, 1).reshape(b, h * w, -1))
        else:
            y = self.proj_in(y).permute(0, 2, 3, 1).reshape(b, h * w, -1)
        for block in self.transformer_blocks:
            y = block(y, context)
        if self.spec.linear:
            y = self.proj_out(y).reshape(b, h, w, -1).permute(0, 3, 1, 2)
        else:
            y = self.proj_out(y.reshape(b, h, w, -1).permute(0, 3, 1, 2))
        return y + x


def set_attention(module: nn.Module, attention: Attention) -> None:
    """Use ``attention(q, k, v, heads)`` in every RCA attention under ``module``."""
    for m in module.modules():
        if isinstance(m, _Attention):
            m.attention = attention


def broadcast_states(states: torch.Tensor, batch: int) -> torch.Tensor:
    """The image states for a sample batch of ``batch``: used as is when the batches agree, else repeated per item
    (``repeat_interleave``: a CFG-doubled or tile-stacked batch holds each image's copies next to each other only
    when the caller built it so; callers that know their batch layout broadcast themselves)."""
    if states.shape[0] == batch:
        return states
    if batch % states.shape[0]:
        raise MissingImageStatesError(f"{states.shape[0]} sets of DAPE image states do not divide the sample batch "
                                      f"{batch}")
    return states.repeat_interleave(batch // states.shape[0], dim=0)


# ------------------------------------------------------------------------------------------- checkpoint layout
def _place(root: nn.Module, dotted: str, module: nn.Module) -> None:
    """Put ``module`` at ``dotted`` under ``root``, creating plain containers (ModuleList for numeric parts, padded
    with empty modules) so the state-dict keys are ``<dotted>.<param>``."""
    parts = dotted.split(".")
    node: nn.Module = root
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        nxt_numeric = not last and parts[i + 1].isdigit()
        if part.isdigit():
            idx = int(part)
            assert isinstance(node, nn.ModuleList)
            while len(node) <= idx:
                node.append(nn.Module())
            if last:
                node[idx] = module
            else:
                if type(node[idx]) is nn.Module and nxt_numeric:
                    node[idx] = nn.ModuleList()
                node = node[idx]
        else:
            if last:
                node.add_module(part, module)
            else:
                child = node._modules.get(part)
                if child is None:
                    child = nn.ModuleList() if nxt_numeric else nn.Module()
                    node.add_module(part, child)
                node = child


class RCASet(nn.Module):
    """The RCA blocks of one SeeSR model without the rest of it, in the checkpoint's key layout
    (``down_blocks.0.image_attentions.0.norm.weight`` …), each with the module path of the ComfyUI
    ``SpatialTransformer`` it follows (``entries`` in ``transformer_index`` order: down, mid, up)."""

    def __init__(self, entries: Sequence[RCAEntry], ops: Any = nn, attention: Attention | None = None,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None):
        super().__init__()
        self.entries = tuple(entries)
        for e in self.entries:
            _place(self, e.prefix, RCABlock(e.spec, ops, attention, dtype, device))

    def blocks(self) -> list[tuple[RCAEntry, RCABlock]]:
        return [(e, self.get_submodule(e.prefix)) for e in self.entries]


# ------------------------------------------------------------------------------------------- diffusers attachment
def _text_transformer(model: nn.Module, prefix: str) -> nn.Module:
    path = prefix.replace(".image_attentions.", ".attentions.")
    try:
        return model.get_submodule(path)
    except AttributeError:
        raise ConfigError(f"{type(model).__name__} has no text transformer at '{path}' for the RCA block "
                          f"'{prefix}'") from None


@dataclass
class RCAAttachment:
    """The RCA blocks hung on one diffusers model, the hook handles and the per-call image states."""

    model: nn.Module
    blocks: list[tuple[RCAEntry, RCABlock]]
    handles: list[Any] = field(default_factory=list)
    states: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return len(self.blocks)

    def detach(self) -> None:
        """Remove the hooks and the ``image_attentions`` submodules from the model."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for entry, _ in self.blocks:
            owner = self.model.get_submodule(entry.prefix.split(".image_attentions.")[0])
            owner._modules.pop("image_attentions", None)
        if getattr(self.model, "_seesr_rca", None) is self:
            del self.model._seesr_rca
        self.blocks.clear()

    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        self.states = kwargs.pop("image_encoder_hidden_states", None)
        return args, kwargs

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        self.states = None
        return output

    def _after_text(self, rca: RCABlock):
        def hook(module: nn.Module, args: tuple, output: Any) -> Any:
            states = self.states
            if states is None:
                raise MissingImageStatesError(
                    f"{type(self.model).__name__} has SeeSR image cross-attention; call it with "
                    "image_encoder_hidden_states=[B, N, 512] (the DAPE embeddings)")
            hidden = output[0] if isinstance(output, tuple) else output.sample
            out = rca(hidden, broadcast_states(states, hidden.shape[0]))
            if isinstance(output, tuple):
                return (out,) + tuple(output[1:])
            output.sample = out
            return output
        return hook


def _model_config(model: nn.Module) -> Mapping[str, Any]:
    cfg = dict(getattr(model, "config", {}) or {})
    if not cfg:
        raise ConfigError(f"{type(model).__name__} has no diffusers config to place SeeSR's RCA blocks")
    return cfg


def attach_rca(model: nn.Module, ops: Any = nn, attention: Attention | None = None,
               expected: int | None = None) -> RCAAttachment:
    """Add SeeSR's RCA blocks to a diffusers ``UNet2DConditionModel`` / ``ControlNetModel`` (in place) and hook them.

    The blocks follow :func:`.layout.rca_entries` of the model's config (the same rule the ComfyUI path uses),
    are created on the model's device/dtype (meta included) and registered as ``<block>.image_attentions.<i>``.
    ``expected`` (16 for the SD-2 UNet, 7 for its ControlNet) is checked when given.
    """
    if getattr(model, "_seesr_rca", None) is not None:
        raise ValueError(f"{type(model).__name__} already has SeeSR RCA attached")
    kind = "unet" if hasattr(model, "up_blocks") else "controlnet"
    entries = rca_entries(_model_config(model), kind)
    if expected is not None and len(entries) != expected:
        raise ConfigError(f"expected {expected} text transformers for SeeSR RCA in {type(model).__name__}, "
                          f"found {len(entries)}")
    ref = next(model.parameters(), None)
    dtype = ref.dtype if ref is not None else None
    device = ref.device if ref is not None else None
    att = RCAAttachment(model, [])
    lists: dict[str, nn.ModuleList] = {}
    for e in entries:
        text = _text_transformer(model, e.prefix)
        if getattr(text, "in_channels", e.spec.channels) != e.spec.channels:
            raise ConfigError(f"RCA block '{e.prefix}' has {e.spec.channels} channels but the text transformer "
                              f"before it has {text.in_channels}")
        owner_path, idx = e.prefix.split(".image_attentions.")
        rca = RCABlock(e.spec, ops, attention, dtype, device)
        lst = lists.get(owner_path)
        if lst is None:
            lst = lists[owner_path] = nn.ModuleList()
            model.get_submodule(owner_path).image_attentions = lst
        if int(idx) != len(lst):
            raise ConfigError(f"RCA blocks of '{owner_path}' are not numbered 0..n-1")
        lst.append(rca)
        att.blocks.append((e, rca))
        att.handles.append(text.register_forward_hook(att._after_text(rca)))
    att.handles.append(model.register_forward_pre_hook(att._pre, with_kwargs=True))
    att.handles.append(model.register_forward_hook(att._post, with_kwargs=True, always_call=True))
    model._seesr_rca = att
    return att


def rca_of(model: nn.Module) -> RCAAttachment | None:
    """The attachment made by :func:`attach_rca` on ``model``, if any."""
    return getattr(model, "_seesr_rca", None)
