"""DA-CLIP hyper-parameters, inferred from the tensor shapes of a state dict (spandrel-style).

One path covers the official ``daclip_ViT-B-32`` (224 px, patch 32, vision width 768, text width 512),
``wild-daclip_ViT-L-14`` (224 px, patch 14, vision width 1024, text width 768) and tiny test models.
Attention heads are ``width // 64`` in both towers (open_clip's head width).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch

from ..errors import ConfigError
from ..shapes import count_blocks, shape

HEAD_WIDTH = 64
FAMILY = "DA-CLIP"


@dataclass(frozen=True)
class DaclipConfig:
    embed_dim: int
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    vision_mlp_ratio: float
    text_width: int
    text_layers: int
    text_mlp_ratio: float
    context_length: int
    vocab_size: int

    @property
    def vision_heads(self) -> int:
        return max(1, self.vision_width // HEAD_WIDTH)

    @property
    def text_heads(self) -> int:
        return max(1, self.text_width // HEAD_WIDTH)

    @property
    def name(self) -> str:
        """A short human name, e.g. ``ViT-B-32@224`` or ``ViT-1024w24L-14@224``."""
        known = {(768, 12): "B", (1024, 24): "L", (1280, 32): "H"}
        size = known.get((self.vision_width, self.vision_layers), f"{self.vision_width}w{self.vision_layers}L")
        return f"ViT-{size}-{self.patch_size}@{self.image_size}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DaclipConfig:
        return cls(**json.loads(text))




def infer_config(sd: Mapping[str, torch.Tensor]) -> DaclipConfig:
    """Read every hyper-parameter from the shapes of a (filtered) DA-CLIP state dict."""
    keys = frozenset(sd)
    width, in_ch, patch, patch_w = shape(sd, "clip.visual.conv1.weight", 4)
    if in_ch != 3 or patch != patch_w:
        raise ConfigError(f"clip.visual.conv1.weight {[width, in_ch, patch, patch_w]}: expected "
                                "[width, 3, patch, patch]")
    tokens, pos_w = shape(sd, "clip.visual.positional_embedding", 2)
    grid = math.isqrt(tokens - 1)
    if grid * grid != tokens - 1 or pos_w != width:
        raise ConfigError(f"clip.visual.positional_embedding {[tokens, pos_w]} does not fit a square grid "
                                f"of width {width}")
    proj_in, embed_dim = shape(sd, "clip.visual.proj", 2)
    context_length, text_width = shape(sd, "clip.positional_embedding", 2)
    vocab_size, tok_w = shape(sd, "clip.token_embedding.weight", 2)
    text_in, text_embed = shape(sd, "clip.text_projection", 2)
    if proj_in != width or tok_w != text_width or text_in != text_width or text_embed != embed_dim:
        raise ConfigError(
            f"inconsistent tower widths: vision {width} -> proj {[proj_in, embed_dim]}, text {text_width} -> "
            f"projection {[text_in, text_embed]}, token embedding width {tok_w}")
    v_layers = count_blocks(keys, "clip.visual.transformer.resblocks.")
    t_layers = count_blocks(keys, "clip.transformer.resblocks.")
    c_layers = count_blocks(keys, "visual_control.transformer.transformer.resblocks.")
    z_layers = count_blocks(keys, "visual_control.transformer.zero_modules.")
    if not v_layers or not t_layers:
        raise ConfigError("not a DA-CLIP state dict: no transformer blocks under 'clip.'")
    if c_layers != v_layers or z_layers != v_layers:
        raise ConfigError(f"the controller has {c_layers} blocks and {z_layers} zero-linears; the vision "
                                f"tower has {v_layers} blocks (they must match)")
    v_mlp = shape(sd, "clip.visual.transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
    t_mlp = shape(sd, "clip.transformer.resblocks.0.mlp.c_fc.weight", 2)[0]
    return DaclipConfig(
        embed_dim=embed_dim, image_size=grid * patch, patch_size=patch, vision_width=width,
        vision_layers=v_layers, vision_mlp_ratio=v_mlp / width, text_width=text_width, text_layers=t_layers,
        text_mlp_ratio=t_mlp / text_width, context_length=context_length, vocab_size=vocab_size)
