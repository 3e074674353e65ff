"""Where SeeSR's parts sit: diffusers module paths ↔ the LDM (``openaimodel`` / ``cldm``) module paths that
ComfyUI's UNet and ControlNet use, the RCA block specs read from a release ``config.json``, and the key
conversions between the two layouts. Pure data, no ComfyUI import (CPU-testable).

Layout rule for an SD-style UNet with ``L`` levels and ``N`` resnets per level (``layers_per_block``):

* ``down_blocks.i.resnets.j`` / ``.attentions.j`` ↔ ``input_blocks.{1 + i(N+1) + j}.0`` / ``.1``;
  ``down_blocks.i.downsamplers.0.conv`` ↔ ``input_blocks.{1 + i(N+1) + N}.0.op``; ``conv_in`` ↔ ``input_blocks.0.0``;
* ``mid_block.resnets.0`` / ``.attentions.0`` / ``.resnets.1`` ↔ ``middle_block.0`` / ``.1`` / ``.2``;
* ``up_blocks.u.resnets.j`` / ``.attentions.j`` ↔ ``output_blocks.{u(N+1) + j}.0`` / ``.1`` (``up_blocks.0`` is the
  deepest level); ``up_blocks.u.upsamplers.0.conv`` ↔ ``output_blocks.{u(N+1) + N}.{2 if attention else 1}.conv``;
* resnet internals ``norm1, conv1, time_emb_proj, norm2, conv2, conv_shortcut`` ↔ ``in_layers.0, in_layers.2,
  emb_layers.1, out_layers.0, out_layers.3, skip_connection``; transformer internals keep their names;
* ControlNet only: ``controlnet_down_blocks.k`` ↔ ``zero_convs.k.0``, ``controlnet_mid_block`` ↔
  ``middle_block_out.0``, ``controlnet_cond_embedding.{conv_in, blocks.j, conv_out}`` ↔
  ``input_hint_block.{0, 2(j+1), 2(n+1)}``.

The RCA block ``<block>.image_attentions.j`` follows the text transformer ``<block>.attentions.j``; in ComfyUI that is
the ``SpatialTransformer`` at the LDM path above, and the RCA blocks come in ``transformer_index`` order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError

IMAGE_CONTEXT_DIM = 512
RESNET_NAMES = {"norm1": "in_layers.0", "conv1": "in_layers.2", "time_emb_proj": "emb_layers.1",
                "norm2": "out_layers.0", "conv2": "out_layers.3", "conv_shortcut": "skip_connection"}
RCA_MARK = ".image_attentions."


@dataclass(frozen=True)
class RCASpec:
    """Sizes of one RCA block: channels of the feature map, heads × head width, transformer depth, GroupNorm groups,
    linear (SD-2) or 1×1-conv projections, width of the image states it attends to."""

    channels: int
    heads: int
    head_dim: int
    depth: int = 1
    groups: int = 32
    linear: bool = True
    context_dim: int = IMAGE_CONTEXT_DIM


@dataclass(frozen=True)
class RCAEntry:
    """One RCA block: its checkpoint prefix, the LDM path of the SpatialTransformer it follows, its sizes."""

    prefix: str    # e.g. "down_blocks.0.image_attentions.1"
    ldm_path: str  # e.g. "input_blocks.2.1"
    spec: RCASpec


@dataclass(frozen=True)
class Levels:
    """The per-level facts of a diffusers UNet/ControlNet config that fix its layout."""

    channels: tuple[int, ...]
    attention: tuple[bool, ...]
    heads: tuple[int, ...]
    depth: tuple[int, ...]
    layers: int
    groups: int
    linear: bool
    mid_attention: bool

    @property
    def n(self) -> int:
        return len(self.channels)


def _per_level(value: Any, n: int, name: str) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise ConfigError(f"config {name} has {len(value)} entries for {n} levels")
        return tuple(int(v) for v in value)
    return (int(value),) * n


def levels(config: Mapping[str, Any]) -> Levels:
    """Read the layout facts from a diffusers ``UNet2DConditionModel`` / ``ControlNetModel`` config.

    Heads follow diffusers' rule: ``num_attention_heads`` when set, else ``attention_head_dim`` (which SD-2 configs
    use for the head *count*)."""
    try:
        channels = tuple(int(c) for c in config["block_out_channels"])
        n = len(channels)
        attention = tuple(str(t).startswith("CrossAttn") for t in config["down_block_types"])
        heads = _per_level(config.get("num_attention_heads") or config["attention_head_dim"], n, "attention heads")
        depth = _per_level(config.get("transformer_layers_per_block", 1), n, "transformer_layers_per_block")
        layers = config.get("layers_per_block", 2)
    except KeyError as exc:
        raise ConfigError(f"the SeeSR config has no {exc.args[0]!r}") from None
    if not isinstance(layers, int):
        if len(set(layers)) != 1:
            raise ConfigError(f"layers_per_block {layers!r} differs per level; SeeSR's layout needs one value")
        layers = int(layers[0])
    if len(attention) != n:
        raise ConfigError(f"{len(attention)} down block types for {n} levels")
    mid = config.get("mid_block_type") or "UNetMidBlock2DCrossAttn"
    return Levels(channels, attention, heads, depth, int(layers), int(config.get("norm_num_groups", 32)),
                  bool(config.get("use_linear_projection", False)), mid == "UNetMidBlock2DCrossAttn")


def _spec(lv: Levels, level: int, context_dim: int) -> RCASpec:
    c, h = lv.channels[level], lv.heads[level]
    if c % h:
        raise ConfigError(f"{c} channels are not divisible by {h} heads")
    return RCASpec(c, h, c // h, lv.depth[level], lv.groups, lv.linear, context_dim)


def rca_entries(config: Mapping[str, Any], kind: str, context_dim: int = IMAGE_CONTEXT_DIM) -> list[RCAEntry]:
    """The RCA blocks of a SeeSR ``unet`` or ``controlnet`` config, in ``transformer_index`` order."""
    if kind not in ("unet", "controlnet"):
        raise ValueError(f"kind must be 'unet' or 'controlnet', got {kind!r}")
    lv = levels(config)
    n, N = lv.n, lv.layers
    out: list[RCAEntry] = []
    for i in range(n):
        if lv.attention[i]:
            for j in range(N):
                out.append(RCAEntry(f"down_blocks.{i}.image_attentions.{j}", f"input_blocks.{1 + i * (N + 1) + j}.1",
                                    _spec(lv, i, context_dim)))
    if lv.mid_attention:
        out.append(RCAEntry("mid_block.image_attentions.0", "middle_block.1", _spec(lv, n - 1, context_dim)))
    if kind == "unet":
        for u in range(n):
            level = n - 1 - u
            if lv.attention[level]:
                for j in range(N + 1):
                    out.append(RCAEntry(f"up_blocks.{u}.image_attentions.{j}", f"output_blocks.{u * (N + 1) + j}.1",
                                        _spec(lv, level, context_dim)))
    return out


def module_map(config: Mapping[str, Any], kind: str) -> dict[str, str]:
    """diffusers module prefix → LDM module prefix for a ``unet`` or ``controlnet`` config (RCA not included)."""
    lv = levels(config)
    n, N = lv.n, lv.layers
    m = {"time_embedding.linear_1": "time_embed.0", "time_embedding.linear_2": "time_embed.2",
         "conv_in": "input_blocks.0.0", "mid_block.resnets.0": "middle_block.0", "mid_block.resnets.1": "middle_block.2"}
    if lv.mid_attention:
        m["mid_block.attentions.0"] = "middle_block.1"
    for i in range(n):
        for j in range(N):
            idx = 1 + i * (N + 1) + j
            m[f"down_blocks.{i}.resnets.{j}"] = f"input_blocks.{idx}.0"
            if lv.attention[i]:
                m[f"down_blocks.{i}.attentions.{j}"] = f"input_blocks.{idx}.1"
        if i < n - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv"] = f"input_blocks.{1 + i * (N + 1) + N}.0.op"
    if kind == "unet":
        m["conv_norm_out"], m["conv_out"] = "out.0", "out.2"
        for u in range(n):
            attn = lv.attention[n - 1 - u]
            for j in range(N + 1):
                idx = u * (N + 1) + j
                m[f"up_blocks.{u}.resnets.{j}"] = f"output_blocks.{idx}.0"
                if attn:
                    m[f"up_blocks.{u}.attentions.{j}"] = f"output_blocks.{idx}.1"
            if u < n - 1:
                m[f"up_blocks.{u}.upsamplers.0.conv"] = f"output_blocks.{u * (N + 1) + N}.{2 if attn else 1}.conv"
    else:
        m["controlnet_mid_block"] = "middle_block_out.0"
        for k in range(1 + n * N + (n - 1)):
            m[f"controlnet_down_blocks.{k}"] = f"zero_convs.{k}.0"
    return m


def _hint_map(sd: Mapping[str, torch.Tensor]) -> dict[str, str]:
    emb = "controlnet_cond_embedding."
    blocks = sorted({int(k[len(emb) + 7:].split(".")[0]) for k in sd if k.startswith(emb + "blocks.")})
    if blocks != list(range(len(blocks))):
        raise ConfigError(f"ControlNet conditioning-embedding blocks are not numbered 0..n-1: {blocks}")
    m = {emb + "conv_in": "input_hint_block.0", emb + "conv_out": f"input_hint_block.{2 * (len(blocks) + 1)}"}
    m.update({f"{emb}blocks.{j}": f"input_hint_block.{2 * (j + 1)}" for j in blocks})
    return m


def split_rca(sd: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``(base, rca)``: the state dict without and with only the ``*.image_attentions.*`` tensors."""
    base, rca = {}, {}
    for k, v in sd.items():
        (rca if RCA_MARK in k else base)[k] = v
    return base, rca


def to_ldm(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any], kind: str, prefix: str = ""
           ) -> dict[str, torch.Tensor]:
    """The base (non-RCA) tensors of a diffusers ``unet``/``controlnet`` state dict under LDM key names (with
    ``prefix``, e.g. ``model.diffusion_model.``). Every key must map: an unknown one is a :class:`ConfigError`."""
    m = module_map(config, kind)
    if kind == "controlnet":
        m.update(_hint_map(sd))
    heads = sorted(m, key=len, reverse=True)
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if RCA_MARK in k:
            continue
        head = next((p for p in heads if k.startswith(p + ".")), None)
        if head is None:
            raise ConfigError(f"the {kind} tensor '{k}' has no place in the LDM layout")
        rest = k[len(head) + 1:]
        if ".resnets." in head or head.startswith("mid_block.resnets"):
            name, _, tail = rest.partition(".")
            if name not in RESNET_NAMES:
                raise ConfigError(f"unknown resnet tensor '{k}'")
            rest = f"{RESNET_NAMES[name]}.{tail}"
        out[f"{prefix}{m[head]}.{rest}"] = v
    return out
