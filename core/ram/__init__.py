"""RAM (Recognize Anything, Swin-L) tagger with SeeSR's DAPE LoRA: tags (hard prompt) and image embeddings
(soft prompt). Only the inference subset of the checkpoint is built."""

from __future__ import annotations

from .arch import CHUNK, DAPE, RAM
from .embeds import DapeEmbeds
from .load import build_tagger, convert, inference_state_dict, load_tagger, load_tagger_descriptor
from .model import RamConfig, Tagger, preprocess, tag_images
from .swin import SwinConfig

__all__ = ["CHUNK", "DAPE", "RAM", "DapeEmbeds", "RamConfig", "SwinConfig", "Tagger", "build_tagger", "convert",
           "inference_state_dict", "load_tagger", "load_tagger_descriptor", "preprocess", "tag_images"]
