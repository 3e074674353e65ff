"""Degradation classification with DA-CLIP: cosine of the degradation embedding to label text embeddings.

probabilities = softmax(100 · normalise(degradation) · normalise(text)ᵀ) over the labels (a hard-coded 100, as
in the official code; neither logit scale of the checkpoint is used).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import InputError
from ..image import check_finite, split_alpha
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


def parse_labels(text: str | Sequence[str] | None) -> list[str]:  # noqa: D401
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
        raise InputError("no degradation labels given: write one label per line")
    return labels


def encode_images(model: DaCLIP, images: torch.Tensor, batch_size: int = 8, progress: Progress | None = None,
                  backend: str = "torch") -> DaclipEmbeds:
    """Images ``[B,C,H,W]`` in [0,1] (gray/alpha accepted) → (clean, degradation) embeddings ``[B, D]`` (float32,
    on the CPU), ``batch_size`` images per encoder call."""
    images, _alpha = split_alpha(images)
    check_finite(images, "image to encode")
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


def probability_table(labels: Sequence[str], probs: torch.Tensor) -> str:
    """Labels × images table of probabilities (the top label of each image marked with ``*``)."""
    width = max(len("label"), *(len(label) for label in labels))
    top = probs.argmax(dim=1)
    head = "label".ljust(width) + "".join(f"  image {b + 1:<3}" for b in range(probs.shape[0]))
    rows = [head]
    for i, label in enumerate(labels):
        cells = "".join(f"  {probs[b, i].item():7.4f}{'*' if top[b] == i else ' '}  " for b in range(probs.shape[0]))
        rows.append(label.ljust(width) + cells.rstrip())
    return "\n".join(rows)


@dataclass(frozen=True)
class Classification:
    """Per-image results of :func:`classify_report`."""

    labels: list[str]          # the candidate labels
    probabilities: torch.Tensor  # [B, len(labels)]
    top: list[str]             # per image: its top-k labels, most likely first, comma separated
    top_probability: list[float]  # per image: the probability of its most likely label
    table: str                 # probability_table()


def classify_report(model: DaCLIP, images: torch.Tensor, labels: str | Sequence[str] | None = None, top_k: int = 1,
                    progress: Progress | None = None) -> Classification:
    """Classify every image and format the results (top-k lines, top probabilities, the table)."""
    names = parse_labels(labels)
    probs = classify(model, images, names, progress=progress)
    k = max(1, min(int(top_k), len(names)))
    top_p, top_i = probs.topk(k, dim=1)
    lines = [", ".join(names[j] for j in row.tolist()) for row in top_i]
    return Classification(names, probs, lines, [float(p) for p in top_p[:, 0]], probability_table(names, probs))


def degradation_from_text(model: DaCLIP, images: torch.Tensor, text: str, match_norm: bool = True,
                          progress: Progress | None = None) -> DaclipEmbeds:
    """The images' clean embeddings with the text embedding of ``text`` as every image's degradation embedding;
    ``match_norm`` scales it to the length of each image's own degradation embedding."""
    text = (text or "").strip()
    if not text:
        raise InputError("the degradation label is empty")
    embeds = encode_images(model, images, progress=progress)
    degra = text_features(model, [text]).expand(len(embeds), -1)
    if match_norm:
        norm = embeds.degradation.norm(dim=1, keepdim=True) / degra.norm(dim=1, keepdim=True).clamp_min(1e-12)
        degra = degra * norm
    return DaclipEmbeds(embeds.clean, degra.contiguous())
