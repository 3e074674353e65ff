"""SeeSR UNet / ControlNet configurations read from tensor shapes (diffusers ``UNet2DConditionModel`` and
``ControlNetModel`` config dicts).

The release folders carry a ``config.json``; a state dict alone still gives every size: channels per level,
blocks per level, which levels have (text) attention, transformer depth, linear projections, the text context
width, in/out channels and the ControlNet's conditioning-embedding widths. Two values are invisible in the shapes
and follow SD-2's rules unless a ``config.json`` says otherwise (as RAM's tagging-head heads do): GroupNorm
groups (32) and attention heads (channels / 64).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from ..errors import ConfigError
from ..shapes import count_blocks, dim, shape

SD2_NORM_GROUPS = 32
SD2_HEAD_DIM = 64
# Config keys that describe sizes (checked against the shapes when a config.json is given).
SHAPE_KEYS = ("block_out_channels", "layers_per_block", "cross_attention_dim", "in_channels", "down_block_types",
              "use_linear_projection", "transformer_layers_per_block", "conditioning_embedding_out_channels",
              "out_channels")
FORK_ONLY_KEYS = ("use_image_cross_attention",)


def _levels(sd: Mapping[str, torch.Tensor], prefix: str) -> tuple[list[int], list[bool], int, int, bool, int]:
    """Per down level: output channels, has text attention; plus resnets per level, transformer depth, linear
    projection, cross-attention width."""
    n = count_blocks(sd, f"{prefix}down_blocks.", "down blocks")
    if not n:
        raise ConfigError(f"no '{prefix}down_blocks.<i>' keys")
    channels, attn = [], []
    depth, linear, cross = 1, True, -1
    layers = count_blocks(sd, f"{prefix}down_blocks.0.resnets.", "resnets")
    for i in range(n):
        base = f"{prefix}down_blocks.{i}."
        channels.append(dim(sd, base + "resnets.0.conv1.weight", 0, "SeeSR"))
        has = f"{base}attentions.0.proj_in.weight" in sd
        attn.append(has)
        if has:
            depth = count_blocks(sd, f"{base}attentions.0.transformer_blocks.", "transformer blocks")
            linear = len(shape(sd, f"{base}attentions.0.proj_in.weight", None, "SeeSR")) == 2
            cross = dim(sd, f"{base}attentions.0.transformer_blocks.0.attn2.to_k.weight", 1, "SeeSR")
    if cross < 0 and f"{prefix}mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight" in sd:
        cross = dim(sd, f"{prefix}mid_block.attentions.0.transformer_blocks.0.attn2.to_k.weight", 1, "SeeSR")
    return channels, attn, layers, depth, linear, cross


def _common(channels: list[int], attn: list[bool], layers: int, depth: int, linear: bool, cross: int,
            in_ch: int) -> dict[str, Any]:
    return {
        "in_channels": in_ch,
        "block_out_channels": channels,
        "layers_per_block": layers,
        "down_block_types": ["CrossAttnDownBlock2D" if a else "DownBlock2D" for a in attn],
        "cross_attention_dim": cross,
        "transformer_layers_per_block": depth,
        "use_linear_projection": linear,
        "attention_head_dim": [max(1, c // SD2_HEAD_DIM) for c in channels],
        "norm_num_groups": SD2_NORM_GROUPS,
    }


def infer_unet_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A diffusers ``UNet2DConditionModel`` config for a SeeSR UNet state dict (SD-2 rules for groups/heads)."""
    channels, attn, layers, depth, linear, cross = _levels(sd, "")
    cfg = _common(channels, attn, layers, depth, linear, cross, shape(sd, "conv_in.weight", 4, "SeeSR UNet")[1])
    cfg["out_channels"] = dim(sd, "conv_out.weight", 0, "SeeSR UNet")
    cfg["up_block_types"] = ["CrossAttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)]
    return cfg


def infer_controlnet_config(sd: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """A diffusers ``ControlNetModel`` config for a SeeSR ControlNet state dict (SD-2 rules for groups/heads)."""
    channels, attn, layers, depth, linear, cross = _levels(sd, "")
    cfg = _common(channels, attn, layers, depth, linear, cross,
                  shape(sd, "conv_in.weight", 4, "SeeSR ControlNet")[1])
    emb = "controlnet_cond_embedding."
    widths = [dim(sd, emb + "conv_in.weight", 0, "SeeSR ControlNet")]
    n_blocks = count_blocks(sd, emb + "blocks.", "conditioning-embedding blocks")
    widths += [dim(sd, f"{emb}blocks.{j}.weight", 0, "SeeSR ControlNet") for j in range(1, n_blocks, 2)]
    cfg["conditioning_embedding_out_channels"] = widths
    cfg["conditioning_channels"] = shape(sd, emb + "conv_in.weight", 4, "SeeSR ControlNet")[1]
    return cfg


def merge_config(given: Mapping[str, Any] | None, inferred: Mapping[str, Any], what: str, source: str
                 ) -> dict[str, Any]:
    """The ``config.json`` (when given) checked against the sizes read from the shapes; else the inferred one."""
    if given is None:
        return dict(inferred)
    cfg = {k: v for k, v in given.items() if not k.startswith("_") and k not in FORK_ONLY_KEYS}
    for key in SHAPE_KEYS:
        if key in cfg and key in inferred:
            a, b = cfg[key], inferred[key]
            if key == "transformer_layers_per_block" and isinstance(a, list):
                a = a[0] if len(set(a)) == 1 else a
            if (list(a) if isinstance(a, (list, tuple)) else a) != (list(b) if isinstance(b, (list, tuple)) else b):
                raise ConfigError(f"'{source}': the {what} config.json says {key}={a!r} but the weights have {b!r}")
    return cfg
