"""SD-2-base text encoder + VAE for the CLI, from a diffusers folder or a single-file checkpoint, fully offline.

* diffusers folder (``stabilityai/stable-diffusion-2-base`` layout): ``vae/`` and ``text_encoder/`` via
  ``from_pretrained(..., local_files_only=True)``;
* single file (``512-base-ema.safetensors`` / ``.ckpt``): converted with diffusers' single-file utilities
  (``convert_ldm_vae_checkpoint``, ``convert_open_clip_checkpoint``) into models built from the SD2 configs shipped
  in ``core/seesr/data`` — nothing is downloaded.

The tokenizer is open_clip's ViT-H-14 BPE (bundled with open_clip; the same vocabulary and 77-token padding as SD2).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch

from ..checkpoint import load_state_dict
from ..errors import ConfigError, WrongModelError


def _data_config(name: str) -> dict:
    text = (resources.files(__package__) / "data" / name).read_text()
    return {k: v for k, v in json.loads(text).items() if not k.startswith("_")}


@dataclass
class SD2Parts:
    """Text encoder (+ tokenizer) and VAE, with the two callables :func:`~.pipeline.upscale` expects."""

    text_encoder: torch.nn.Module
    vae: torch.nn.Module
    tokenizer: object

    def to(self, device: str | torch.device, dtype: torch.dtype = torch.float32) -> SD2Parts:
        self.text_encoder.to(device=device, dtype=dtype)
        self.vae.to(device=device, dtype=dtype)
        return self

    def _param(self, m: torch.nn.Module) -> torch.Tensor:
        return next(m.parameters())

    def encode_text(self, texts: Sequence[str]) -> torch.Tensor:
        p = self._param(self.text_encoder)
        ids = self.tokenizer(list(texts)).to(p.device)
        with torch.inference_mode():
            return self.text_encoder(ids).last_hidden_state.float()

    def vae_encode(self, x: torch.Tensor) -> torch.Tensor:
        """[B,3,H,W] in [0,1] → unscaled latent (posterior mode, as ComfyUI's VAEEncode)."""
        p = self._param(self.vae)
        with torch.inference_mode():
            return self.vae.encode((x * 2 - 1).to(p.device, p.dtype)).latent_dist.mode().float()

    def vae_decode(self, z: torch.Tensor) -> torch.Tensor:
        p = self._param(self.vae)
        with torch.inference_mode():
            return ((self.vae.decode(z.to(p.device, p.dtype)).sample.float() + 1) / 2).clamp(0, 1)


def _tokenizer(context_length: int = 77):
    import open_clip

    return open_clip.get_tokenizer("ViT-H-14", context_length=context_length)


def _fix_meta_buffers(model: torch.nn.Module) -> None:
    """Non-persistent buffers are not in a checkpoint: rebuild the ones a meta-built model left empty."""
    for name, buf in list(model.named_buffers()):
        if not buf.is_meta:
            continue
        owner = model.get_submodule(name.rpartition(".")[0]) if "." in name else model
        leaf = name.rpartition(".")[2]
        if leaf != "position_ids":
            raise ValueError(f"buffer {name} is not in the checkpoint")
        owner.register_buffer(leaf, torch.arange(buf.shape[-1]).expand(buf.shape), persistent=False)


def sd2_from_checkpoint(ckpt, source: str = "<checkpoint>"):
    """(AutoencoderKL, CLIPTextModel) from an SD-2 single-file state dict (``first_stage_model.*``,
    ``cond_stage_model.model.*``) with diffusers' converters and the shipped SD-2 configs. Meta tensors in, meta
    models out (used to check the conversion without the 5 GB file)."""
    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import (
        convert_ldm_vae_checkpoint,
        convert_open_clip_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    if not any(k.startswith("first_stage_model.") for k in ckpt) or \
            not any(k.startswith("cond_stage_model.model.") for k in ckpt):
        raise WrongModelError(f"'{source}' is not an SD-2 single-file checkpoint (no first_stage_model.* / "
                         "cond_stage_model.model.* keys)")
    vcfg = _data_config("sd2_vae_config.json")
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vcfg)
        text = CLIPTextModel(CLIPTextConfig(**_data_config("sd2_text_encoder_config.json")))
    vae.load_state_dict(convert_ldm_vae_checkpoint(ckpt, vcfg), strict=True, assign=True)
    converted = convert_open_clip_checkpoint(text, ckpt)
    own = set(text.state_dict())
    if not own & set(converted):  # transformers >= 5 dropped the ``text_model.`` wrapper of CLIPTextModel
        converted = {k.removeprefix("text_model."): v for k, v in converted.items()}
    missing, unexpected = text.load_state_dict(converted, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ConfigError(f"'{source}': text encoder conversion left {len(missing)} missing / "
                         f"{len(unexpected)} unexpected keys (e.g. {(missing + unexpected)[:3]})")
    _fix_meta_buffers(text)
    return vae, text


def load_sd2(path: str | os.PathLike, tiled_vae: bool = True) -> SD2Parts:
    """SD-2-base text encoder + VAE from a diffusers folder or a single-file checkpoint (offline)."""
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel

    path = Path(path)
    if path.is_dir():
        if not (path / "vae").is_dir() or not (path / "text_encoder").is_dir():
            raise FileNotFoundError(f"'{path}' is not a diffusers SD-2 folder (needs vae/ and text_encoder/)")
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True)
        text = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True)
    elif path.is_file():
        vae, text = sd2_from_checkpoint(load_state_dict(path), source=str(path))
    else:
        raise FileNotFoundError(f"SD-2 model '{path}' does not exist")
    if tiled_vae:
        vae.enable_tiling()
    return SD2Parts(text.eval().requires_grad_(False), vae.eval().requires_grad_(False),
                    _tokenizer(text.config.max_position_embeddings))
