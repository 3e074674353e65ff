"""RAM (Recognize Anything, Swin-L) tagger with SeeSR's DAPE LoRA: tags (hard prompt) and image embeddings
(soft prompt). Only the inference subset of the checkpoint is built."""

from __future__ import annotations

from .embeds import DapeEmbeds

__all__ = ["DapeEmbeds"]
