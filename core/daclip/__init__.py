"""DA-CLIP (Luo et al., "Controlling Vision-Language Models for Multi-Task Image Restoration", ICLR 2024).

Library API::

    model = load_daclip("models/daclip/daclip_ViT-B-32.pt")           # fp32, CPU unless told otherwise
    pixels = preprocess(images, model.image_size)                     # [B,3,H,W] in [0,1] → [B,3,S,S]
    clean, degradation = model.encode_image(pixels, control=True)     # unnormalised [B, D] each
    text = model.encode_text(["hazy", "rainy"])                       # [N, D]
    probs = classify(model, images)                                   # [B, 10] over DEGRADATIONS
"""

from .arch import ARCH
from .classify import (
    DEGRADATIONS,
    Classification,
    classify,
    classify_report,
    degradation_from_text,
    encode_images,
    logits,
    parse_labels,
    probabilities,
    text_features,
)
from .config import DaclipConfig, infer_config
from .embeds import DaclipEmbeds
from .load import convert, inference_state_dict, load_daclip
from .model import DaCLIP, build_daclip
from .preprocess import OPENAI_MEAN, OPENAI_STD, TORCH_TOLERANCE, preprocess

__all__ = [
    "ARCH",
    "DEGRADATIONS",
    "Classification",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "TORCH_TOLERANCE",
    "DaCLIP",
    "DaclipConfig",
    "DaclipEmbeds",
    "build_daclip",
    "classify",
    "classify_report",
    "degradation_from_text",
    "convert",
    "encode_images",
    "infer_config",
    "inference_state_dict",
    "load_daclip",
    "logits",
    "parse_labels",
    "preprocess",
    "probabilities",
    "text_features",
]
