"""SeeSR's image cross-attention ("RCA") as a separable attachment on a stock diffusers SD2 UNet/ControlNet.

SeeSR adds, right after every text ``Transformer2DModel`` of an SD2 UNet (16 of them) and of its ControlNet (7), a
second one-layer ``Transformer2DModel`` whose cross-attention reads the DAPE image embeddings ``[B, N, 512]``
instead of the text states. :func:`attach_rca` builds those modules next to the text blocks, registers them as
``<block>.image_attentions.<i>`` (the checkpoint's key names) and hooks them in:

* a forward pre-hook on the top-level model takes the extra call argument ``image_encoder_hidden_states=`` out of
  the keyword arguments (so the stock ``forward`` never sees it) and keeps it for the duration of the call;
* a forward hook on each text transformer replaces its output ``h`` by ``rca(h, image states)``.

Nothing of diffusers is modified or subclassed; :meth:`RCAAttachment.detach` removes everything again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.models.transformers.transformer_2d import Transformer2DModel
from torch import nn

from ..errors import MissingImageStatesError

IMAGE_CROSS_ATTENTION_DIM = 512  # hard-coded in SeeSR (RAM's image_proj width)




def _text_blocks(model: nn.Module) -> list[nn.Module]:
    """Blocks holding text transformers, in the checkpoint's order (down, mid, up)."""
    blocks: list[nn.Module] = list(getattr(model, "down_blocks", []))
    mid = getattr(model, "mid_block", None)
    if mid is not None:
        blocks.append(mid)
    blocks.extend(getattr(model, "up_blocks", []))
    return [b for b in blocks if isinstance(getattr(b, "attentions", None), nn.ModuleList)
            and len(b.attentions) and all(isinstance(a, Transformer2DModel) for a in b.attentions)]


def make_rca(text_attn: Transformer2DModel, cross_attention_dim: int = IMAGE_CROSS_ATTENTION_DIM) -> Transformer2DModel:
    """An RCA block matching ``text_attn``: same heads, head dim, channels, depth (SeeSR passes the block's
    ``transformer_layers_per_block`` to both; 1 in SD-2), norm groups and projection type."""
    cfg = text_attn.config
    return Transformer2DModel(
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=cfg.in_channels,
        num_layers=cfg.num_layers,
        cross_attention_dim=cross_attention_dim,
        norm_num_groups=cfg.norm_num_groups,
        use_linear_projection=cfg.use_linear_projection,
        only_cross_attention=cfg.only_cross_attention,
        upcast_attention=cfg.upcast_attention,
        attention_type=cfg.attention_type,
    )


@dataclass
class RCAAttachment:
    """The RCA modules hung on one model, plus the hook handles and the per-call image states."""

    model: nn.Module
    modules: list[tuple[nn.Module, nn.ModuleList]]
    handles: list[Any] = field(default_factory=list)
    states: torch.Tensor | None = None

    @property
    def count(self) -> int:
        return sum(len(m) for _, m in self.modules)

    def detach(self) -> None:
        """Remove the hooks and the ``image_attentions`` submodules from the model."""
        for h in self.handles:
            h.remove()
        self.handles.clear()
        for block, _ in self.modules:
            if "image_attentions" in block._modules:
                del block._modules["image_attentions"]
        if getattr(self.model, "_seesr_rca", None) is self:
            del self.model._seesr_rca
        self.modules.clear()

    # hooks ---------------------------------------------------------------------------------------------------
    def _pre(self, module: nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        self.states = kwargs.pop("image_encoder_hidden_states", None)
        return args, kwargs

    def _post(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
        self.states = None
        return output

    def _after_text(self, rca: nn.Module):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> Any:
            states = self.states
            if states is None:
                raise MissingImageStatesError(
                    f"{type(self.model).__name__} has SeeSR image cross-attention; call it with "
                    "image_encoder_hidden_states=[B, N, 512] (the DAPE embeddings)")
            hidden = output[0] if isinstance(output, tuple) else output.sample
            if states.shape[0] != hidden.shape[0]:
                if hidden.shape[0] % states.shape[0]:
                    raise ValueError(f"image_encoder_hidden_states batch {states.shape[0]} does not divide the "
                                     f"sample batch {hidden.shape[0]}")
                states = states.repeat_interleave(hidden.shape[0] // states.shape[0], dim=0)
            out = rca(hidden, encoder_hidden_states=states.to(hidden.dtype),
                      cross_attention_kwargs=kwargs.get("cross_attention_kwargs"), return_dict=False)[0]
            if isinstance(output, tuple):
                return (out,) + tuple(output[1:])
            output.sample = out
            return output
        return hook


def attach_rca(model: nn.Module, cross_attention_dim: int = IMAGE_CROSS_ATTENTION_DIM,
               expected: int | None = None) -> RCAAttachment:
    """Add SeeSR's RCA blocks to a diffusers UNet2DConditionModel/ControlNetModel (in place) and hook them in.

    ``expected`` (16 for the SD2 UNet, 7 for its ControlNet) is checked when given. The new modules are created on
    the model's current device/dtype (meta included) and are registered as ``<block>.image_attentions.<i>``.
    """
    if getattr(model, "_seesr_rca", None) is not None:
        raise ValueError(f"{type(model).__name__} already has SeeSR RCA attached")
    blocks = _text_blocks(model)
    ref = next(model.parameters(), None)
    att = RCAAttachment(model, [])
    for block in blocks:
        rcas = nn.ModuleList([make_rca(a, cross_attention_dim) for a in block.attentions])
        if ref is not None:
            rcas.to(device=ref.device, dtype=ref.dtype)
        block.image_attentions = rcas
        att.modules.append((block, rcas))
        for text_attn, rca in zip(block.attentions, rcas):
            att.handles.append(text_attn.register_forward_hook(att._after_text(rca), with_kwargs=True))
    if expected is not None and att.count != expected:
        att.detach()
        raise ValueError(f"expected {expected} text attention blocks for SeeSR RCA in {type(model).__name__}, "
                         f"found {att.count}")
    att.handles.append(model.register_forward_pre_hook(att._pre, with_kwargs=True))
    att.handles.append(model.register_forward_hook(att._post, with_kwargs=True, always_call=True))
    model._seesr_rca = att
    return att


def rca_of(model: nn.Module) -> RCAAttachment | None:
    """The attachment made by :func:`attach_rca` on ``model``, if any."""
    return getattr(model, "_seesr_rca", None)
