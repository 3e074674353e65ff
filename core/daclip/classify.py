"""Degradation classification with DA-CLIP: cosine of the degradation embedding to label text embeddings.

probabilities = softmax(100 · normalise(degradation) · normalise(text)ᵀ) over the labels (a hard-coded 100, as
in the official code; neither logit scale of the checkpoint is used).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..progress import Progress
from .embeds import DaclipEmbeds
from .model import DaCLIP
from .preprocess import preprocess

# The ten degradation types DA-CLIP was trained on, in the official order.
DEGRADATIONS: tuple[str, ...] = ("motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy", "raindrop",
                                 "rainy", "shadowed", "snowy", "uncompleted")
LOGIT_SCALE = 100.0


def logits(degradation: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` × ``[N, D]`` → ``100 · cosine`` ``[B, N]`` (float32)."""
    d = F.normalize(degradation.float(), dim=-1)
    t = F.normalize(text_features.float().to(d.device), dim=-1)
    return LOGIT_SCALE * d @ t.T


def probabilities(degradation: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    return logits(degradation, text_features).softmax(dim=-1)


def parse_labels(text: str | Sequence[str] | None) -> list[str]:
    """Labels from a list or from text with one label per line (or comma-separated); blanks and duplicates
    are dropped. ``None`` → the ten official labels."""
    if text is None:
        return list(DEGRADATIONS)
    items = text.replace(",", "\n").splitlines() if isinstance(text, str) else list(text)
    labels: list[str] = []
    for item in items:
        label = str(item).strip()
        if label and label not in labels:
            labels.append(label)
    if not labels:
        raise ValueError("no degradation labels given: write one label per line")
    return labels


def encode_images(model: DaCLIP, images: torch.Tensor, batch_size: int = 8, progress: Progress | None = None,
                  backend: str = "torch") -> DaclipEmbeds:
    """Images ``[B,C,H,W]`` in [0,1] → (clean, degradation) embeddings ``[B, D]`` (float32, on the CPU)."""
    clean, degra = [], []
    total = images.shape[0]
    for start in range(0, total, max(1, batch_size)):
        # preprocess image by image: a batch of huge images never sits on the device at full size at once
        pixels = torch.cat([preprocess(img[None].to(model.weight_device), model.image_size, backend=backend)
                            for img in images[start:start + batch_size]])
        with torch.no_grad():
            c, d = model.encode_image(pixels, control=True)
        clean.append(c.float().cpu())
        degra.append(d.float().cpu())
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return DaclipEmbeds(torch.cat(clean), torch.cat(degra))


def text_features(model: DaCLIP, labels: Sequence[str]) -> torch.Tensor:
    with torch.no_grad():
        return model.encode_text(list(labels)).float().cpu()


def classify(model: DaCLIP, images: torch.Tensor, labels: Sequence[str] | None = None,
             progress: Progress | None = None) -> torch.Tensor:
    """Probabilities ``[B, len(labels)]`` of each label (default: the ten official degradations) per image."""
    names = parse_labels(labels)
    embeds = encode_images(model, images, progress=progress)
    return probabilities(embeds.degradation, text_features(model, names))
