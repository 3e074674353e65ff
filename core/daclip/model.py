"""DA-CLIP: a frozen open_clip CLIP plus a controller (a second vision tower) that steers its image features.

The frozen towers are open_clip's own modules (``open_clip.CLIP``: ``VisionTransformer`` + the flat text
tower), so the official weights load with their official key names. Only the controller and the controlled
forward are written here:

* ``visual_control`` is a full ViT with the same shapes as ``clip.visual``; its blocks live under
  ``visual_control.transformer.transformer.resblocks.i`` and each block ``i`` is followed by a zero-initialised
  ``Linear(width, width)`` at ``visual_control.transformer.zero_modules.i``. After block ``i`` the control hidden
  ``h_i = zero_modules[i](stream)`` is recorded; the controller's own stream is not modified. Its pooled output
  (CLS → ln_post → proj) is the degradation embedding.
* The main tower runs normally except that after its block ``i`` (every block, including the last) it adds
  ``h_(L-1-i)``: the hiddens are consumed in reverse order. Its pooled output is the clean-content embedding.

Both outputs are unnormalised, as in the official code.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence

import torch
from torch import nn

from ..errors import InputError
from .config import DaclipConfig

log = logging.getLogger(__name__)

OPENAI_TOKENIZER_VOCAB = 49408


def _open_clip():
    import open_clip  # heavy import, kept out of module import time

    return open_clip


@functools.lru_cache(maxsize=4)
def _tokenizer(context_length: int):
    """open_clip's bundled ViT-B-32 BPE tokenizer (no download)."""
    return _open_clip().get_tokenizer("ViT-B-32", context_length=context_length)


class ControlTransformer(nn.Module):
    """The controller's block stack: open_clip ``Transformer`` blocks, each followed by a zero-linear."""

    def __init__(self, transformer: nn.Module, width: int) -> None:
        super().__init__()
        self.transformer = transformer
        self.zero_modules = nn.ModuleList(nn.Linear(width, width) for _ in range(len(transformer.resblocks)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``x`` ``[B, L, W]`` → (final stream, control hiddens ``[B, L, W]`` per block)."""
        hiddens = []
        for block, zero in zip(self.transformer.resblocks, self.zero_modules):
            x = block(x)
            hiddens.append(zero(x))
        return x, hiddens


def _vision_tokens(vit: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """Patch embedding + class token + positions + ln_pre of an open_clip ``VisionTransformer`` (NLD)."""
    x = vit.conv1(pixels)
    x = x.flatten(2).transpose(1, 2)
    cls = vit.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + vit.positional_embedding.to(x.dtype)
    return vit.ln_pre(x)


def _vision_pool(vit: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """CLS token → ln_post → projection."""
    return vit.ln_post(x[:, 0]) @ vit.proj


class DaCLIP(nn.Module):
    """DA-CLIP with the official state-dict layout (``logit_scale``, ``clip.*``, ``visual_control.*``)."""

    def __init__(self, config: DaclipConfig) -> None:
        super().__init__()
        oc = _open_clip()
        from open_clip.transformer import VisionTransformer

        self.config = config
        vision_cfg = oc.CLIPVisionCfg(layers=config.vision_layers, width=config.vision_width,
                                      head_width=config.vision_width // config.vision_heads,
                                      mlp_ratio=config.vision_mlp_ratio, patch_size=config.patch_size,
                                      image_size=config.image_size)
        text_cfg = oc.CLIPTextCfg(context_length=config.context_length, vocab_size=config.vocab_size,
                                  width=config.text_width, heads=config.text_heads, layers=config.text_layers,
                                  mlp_ratio=config.text_mlp_ratio)
        self.logit_scale = nn.Parameter(torch.ones([]))
        self.clip = oc.CLIP(config.embed_dim, vision_cfg, text_cfg, quick_gelu=False)
        control = VisionTransformer(image_size=config.image_size, patch_size=config.patch_size,
                                    width=config.vision_width, layers=config.vision_layers,
                                    heads=config.vision_heads, mlp_ratio=config.vision_mlp_ratio,
                                    output_dim=config.embed_dim)
        control.transformer = ControlTransformer(control.transformer, config.vision_width)
        self.visual_control = control

    # ----------------------------------------------------------------------------------------------------- info
    @property
    def image_size(self) -> int:
        return self.config.image_size

    # Not named ``device``/``dtype``: ComfyUI's ModelPatcher assigns ``model.device`` when it moves a model.
    @property
    def weight_device(self) -> torch.device:
        return self.logit_scale.device

    @property
    def weight_dtype(self) -> torch.dtype:
        return self.logit_scale.dtype

    def reset_buffers(self) -> None:
        """Rebuild the non-persistent buffers (the text causal mask) on the parameters' device."""
        n = self.config.context_length
        mask = torch.full((n, n), float("-inf"), device=self.weight_device).triu_(1)
        self.clip.attn_mask = mask

    # ------------------------------------------------------------------------------------------------- forward
    def _check_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        s = self.image_size
        if pixels.ndim != 4 or pixels.shape[1] != 3 or tuple(pixels.shape[-2:]) != (s, s):
            raise InputError(f"DA-CLIP ({self.config.name}) expects preprocessed pixels [B, 3, {s}, {s}], got "
                             f"{list(pixels.shape)}; use preprocess(images, {s}) first")
        return pixels.to(device=self.weight_device, dtype=self.weight_dtype)

    def control_hiddens(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(degradation features ``[B, D]``, control hiddens ``[B, L, W]`` per controller block)."""
        ctrl = self.visual_control
        x, hiddens = ctrl.transformer(_vision_tokens(ctrl, self._check_pixels(pixels)))
        return _vision_pool(ctrl, x), hiddens

    def encode_image(self, pixels: torch.Tensor, control: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor] | torch.Tensor:
        """``control=True`` → (clean features, degradation features), both ``[B, D]`` unnormalised;
        ``control=False`` → the frozen CLIP image features alone."""
        pixels = self._check_pixels(pixels)
        if not control:
            return self.clip.encode_image(pixels)
        degradation, hiddens = self.control_hiddens(pixels)
        vit = self.clip.visual
        x = _vision_tokens(vit, pixels)
        last = len(hiddens) - 1
        for i, block in enumerate(vit.transformer.resblocks):
            x = block(x) + hiddens[last - i]
        return _vision_pool(vit, x), degradation

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encode_image(pixels, control=True)

    def tokenize(self, texts: Sequence[str]) -> torch.Tensor:
        if isinstance(texts, str):
            texts = [texts]
        if not texts:
            raise InputError("encode_text needs at least one text")
        if self.config.vocab_size != OPENAI_TOKENIZER_VOCAB:
            raise InputError(f"this DA-CLIP text tower has a vocabulary of {self.config.vocab_size} tokens; the "
                             f"bundled CLIP tokenizer needs {OPENAI_TOKENIZER_VOCAB}")
        return _tokenizer(self.config.context_length)(list(texts))

    def encode_text(self, texts: Sequence[str] | torch.Tensor) -> torch.Tensor:
        """Texts (or token ids ``[N, context]``) → unnormalised text features ``[N, D]``."""
        tokens = texts if isinstance(texts, torch.Tensor) else self.tokenize(texts)
        return self.clip.encode_text(tokens.to(self.weight_device))


def build_daclip(config: DaclipConfig, device: str | torch.device = "meta") -> DaCLIP:
    """An uninitialised DA-CLIP (parameters on ``device``; ``meta`` costs no memory and no time)."""
    _open_clip()  # import open_clip (and its module-level tensors) outside the device context
    import open_clip.transformer  # noqa: F401

    with torch.device(device):
        return DaCLIP(config)
