"""DA-CLIP image preprocessing (the official ``clip_transform``) for ``[B,3,H,W]`` RGB tensors in [0,1].

Steps, as the official code does them: the image is quantised to 8 bits by truncation (``(x * 255)`` cast to
uint8), the shorter side is resized to ``size`` with bicubic antialiasing (the longer side to
``int(size * long / short)``), a ``size x size`` centre crop is taken with offsets ``round((side - size) / 2)``
(Python rounding), the result is read back as ``uint8 / 255`` and normalised with the OpenAI mean/std.

``backend="torch"`` (default) runs on the images' device with ``F.interpolate(bicubic, antialias=True)``:
it differs from the official PIL resize by at most 1-2 uint8 levels (``TORCH_TOLERANCE`` in normalised units).
``backend="pil"`` goes through PIL image by image and is bit-exact with the official code.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..image import ImageInputError, resize, split_alpha

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# 2 uint8 levels divided by the smallest std: the largest torch-vs-PIL difference in normalised units.
TORCH_TOLERANCE = 2.0 / 255.0 / min(OPENAI_STD)
BACKENDS = ("torch", "pil")


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shorter side → ``size``; the longer side scaled and truncated (torchvision ``Resize(int)``)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def crop_offsets(height: int, width: int, size: int) -> tuple[int, int]:
    """(top, left) of the centre crop (torchvision ``CenterCrop``: Python ``round``)."""
    return round((height - size) / 2.0), round((width - size) / 2.0)


def _normalise(x: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(OPENAI_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def _to_uint8_levels(x: torch.Tensor) -> torch.Tensor:
    """float [0,1] → float32 integer levels 0..255, truncated like ``numpy.astype(uint8)``."""
    return torch.floor(x.float().clamp(0.0, 1.0) * 255.0)


def _torch_one_size(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    nh, nw = resized_shape(h, w, size)
    levels = resize(_to_uint8_levels(x), (nh, nw), mode="bicubic", antialias=True)
    top, left = crop_offsets(nh, nw, size)
    levels = levels[..., top:top + size, left:left + size]
    return levels.round().clamp(0.0, 255.0) / 255.0


def _pil_one(x: torch.Tensor, size: int) -> torch.Tensor:
    from PIL import Image

    arr = _to_uint8_levels(x).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    img = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    nh, nw = resized_shape(img.height, img.width, size)
    if (nh, nw) != (img.height, img.width):
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
    top, left = crop_offsets(nh, nw, size)
    img = img.crop((left, top, left + size, top + size))
    return torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)


def preprocess(images: torch.Tensor, size: int, backend: str = "torch") -> torch.Tensor:
    """``[B,C,H,W]`` images in [0,1] (RGB; gray and alpha channels are handled: gray is repeated, alpha is
    ignored) → normalised pixels ``[B,3,size,size]`` float32 on the images' device."""
    if backend not in BACKENDS:
        raise InputError(f"preprocess backend must be one of {BACKENDS}, got {backend!r}")
    rgb, _alpha = split_alpha(images)
    h, w = rgb.shape[-2:]
    if min(h, w) < 1:
        raise ImageInputError(f"cannot preprocess an image of {w}x{h} pixels")
    if size < 1:
        raise InputError(f"size must be positive, got {size}")
    if backend == "pil":
        out = torch.stack([_pil_one(img, size) for img in rgb]).to(rgb.device)
    else:
        out = _torch_one_size(rgb, size)
    return _normalise(out.float())
