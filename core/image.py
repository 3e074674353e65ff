"""Image tensor helpers shared by every family.

Conventions: model tensors are ``[B,3,H,W]`` float RGB in [0,1]; ComfyUI IMAGE tensors are ``[B,H,W,C]``.
Alpha is kept aside by ``split_alpha`` and can be re-attached (resized) by ``merge_alpha`` for per-pixel ops.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ImageInputError, InputError

# F.interpolate(bicubic, antialias=True) vs PIL BICUBIC on 8-bit images: measured max 2/255 per channel
# (mean < 0.3/255) on photographs and random fields; see tests/test_image.py.
PIL_BICUBIC_TOLERANCE = 2.0 / 255.0


__all__ = ["ImageInputError", "check_finite", "checked_inputs", "crop", "from_comfy", "load_image", "match_batch",
           "merge_alpha", "pad_to_multiple", "resize", "save_image", "split_alpha", "to_comfy"]


def _batch(x: torch.Tensor, what: str, layout: str) -> torch.Tensor:
    """``x`` as a non-empty 4-D batch (a single 3-D image gets a batch axis), else an :class:`ImageInputError`."""
    if not isinstance(x, torch.Tensor):
        raise ImageInputError(f"expected {what} tensor, got {type(x).__name__} (a {layout} batch)")
    if x.ndim == 3:
        x = x.unsqueeze(0)
    if x.ndim != 4:
        raise ImageInputError(f"expected {what} batch {layout}, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ImageInputError("the image batch is empty")
    return x


def split_alpha(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``[B,C,H,W]`` with C in 1..4 → (RGB ``[B,3,H,W]``, alpha ``[B,1,H,W]`` or None).
    Grayscale (C=1, or C=2 gray+alpha) is repeated to RGB."""
    x = _batch(x, "an image", "[B,C,H,W]")
    c = x.shape[1]
    if c == 1:
        return x.expand(-1, 3, -1, -1).contiguous(), None
    if c == 2:
        return x[:, :1].expand(-1, 3, -1, -1).contiguous(), x[:, 1:2]
    if c == 3:
        return x, None
    if c == 4:
        return x[:, :3], x[:, 3:4]
    raise ImageInputError(f"images must have 1 to 4 channels (gray, gray+alpha, RGB, RGBA), got {c}")


def merge_alpha(rgb: torch.Tensor, alpha: torch.Tensor | None) -> torch.Tensor:
    """Re-attach alpha (resized bilinearly to the RGB size when needed)."""
    if alpha is None:
        return rgb
    if alpha.shape[-2:] != rgb.shape[-2:]:
        alpha = F.interpolate(alpha.float(), size=rgb.shape[-2:], mode="bilinear", align_corners=False,
                              antialias=alpha.shape[-1] > rgb.shape[-1]).clamp(0, 1)
    return torch.cat([rgb, alpha.to(rgb.dtype)], dim=1)


def from_comfy(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """ComfyUI IMAGE ``[B,H,W,C]`` (or ``[H,W,C]``) → (``[B,3,H,W]`` float32 RGB, alpha or None)."""
    image = _batch(image, "an IMAGE", "[B,H,W,C]")
    if not 1 <= image.shape[-1] <= 4:
        hint = (" It looks channels-first [B,C,H,W]; ComfyUI IMAGE tensors are channels-last: permute(0, 2, 3, 1)."
                if 1 <= image.shape[1] <= 4 else "")
        raise ImageInputError(f"expected an IMAGE batch [B,H,W,C] with 1 to 4 channels last (gray, gray+alpha, RGB, "
                              f"RGBA), got shape {tuple(image.shape)} (C = {image.shape[-1]}).{hint}")
    x = image.movedim(-1, 1)
    if not x.is_floating_point():
        x = x.float() / float(torch.iinfo(x.dtype).max)
    return split_alpha(x.float())


def to_comfy(rgb: torch.Tensor, alpha: torch.Tensor | None = None, clamp: bool = True) -> torch.Tensor:
    """``[B,3,H,W]`` (+ alpha) → ComfyUI IMAGE ``[B,H,W,C]`` float32 on CPU."""
    x = merge_alpha(rgb.float(), alpha)
    if clamp:
        x = x.clamp(0.0, 1.0)
    return x.movedim(1, -1).contiguous().cpu()



def _not_finite(x: torch.Tensor) -> torch.Tensor:
    """The scan :func:`check_finite` runs (one pass over ``x``)."""
    return ~torch.isfinite(x)


_INPUTS_CHECKED: ContextVar[bool] = ContextVar("aware_restore_inputs_checked", default=False)


@contextmanager
def checked_inputs() -> Iterator[None]:
    """The body of a core entry point whose inputs :func:`check_finite` has already checked: inside it, the
    entry points it calls in turn (SeeSR's ``upscale`` → ``condition_image``, ``sample``, ``color_fix``, the
    tagger; IR-SDE's ``restore`` → DA-CLIP's ``encode_images``) skip their own finite checks, so every input is
    scanned once per entry, not once per level."""
    token = _INPUTS_CHECKED.set(True)
    try:
        yield
    finally:
        _INPUTS_CHECKED.reset(token)


def check_finite(x: torch.Tensor, what: str = "image") -> torch.Tensor:
    """Return ``x`` when every value is finite; else an :class:`InputError` naming ``what`` and how many pixels
    (positions ``[b, y, x]`` of a ``[B,C,H,W]`` batch; values for other shapes) hold NaN or ±inf. The one
    non-finite check every family runs at its core entry (a NaN pixel would spread over the whole output); a
    no-op inside :func:`checked_inputs` (an outer entry checked the data already)."""
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.is_meta or _INPUTS_CHECKED.get():
        return x
    bad = _not_finite(x)
    if not bool(bad.any()):
        return x
    if x.ndim == 4:
        n, total, unit = int(bad.any(dim=1).sum()), x.shape[0] * x.shape[2] * x.shape[3], "pixels"
    else:
        n, total, unit = int(bad.sum()), x.numel(), "values"
    kinds = [k for k, m in (("NaN", torch.isnan(x)), ("infinite", torch.isinf(x))) if bool(m.any())]
    raise InputError(f"the {what} has {n} of {total} {unit} that are not finite ({' and '.join(kinds)}); nothing "
                     f"was computed. Fix the node or file that produced it, or replace the values first (e.g. "
                     f"torch.nan_to_num)")


def match_batch(x: torch.Tensor, batch: int, what: str, expand: bool = True) -> torch.Tensor:
    """The one batch-broadcast rule: a batch of ``batch`` passes, a batch of 1 is repeated (``expand``; views,
    no copy) or kept as 1 (``expand=False``), anything else is an :class:`InputError` naming ``what``."""
    n = int(x.shape[0])
    if n == batch:
        return x
    if n == 1:
        return x.expand(batch, *x.shape[1:]) if expand else x
    raise InputError(f"the {what} batch has {n} entries but the image batch has {batch}; give one {what} for all "
                     f"images or one per image")


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right so H and W are multiples of ``multiple``. Returns (padded, (H, W) original).
    Reflect padding falls back to replicate where the image is too small to reflect."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode), (h, w)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return x[..., : size[0], : size[1]]


def resize(x: torch.Tensor, size: tuple[int, int], mode: str = "bicubic", antialias: bool = True,
           clamp: bool = False) -> torch.Tensor:
    """Resize ``[B,C,H,W]`` to ``size`` = (H, W). Antialias applies when downscaling (as PIL always does)."""
    h, w = int(size[0]), int(size[1])
    if h < 1 or w < 1:
        raise ImageInputError(f"cannot resize to {w}x{h}")
    if tuple(x.shape[-2:]) == (h, w):
        return x
    kwargs = {} if mode in ("nearest", "area", "nearest-exact") else {"align_corners": False}
    if mode in ("bilinear", "bicubic"):
        kwargs["antialias"] = antialias
    dtype = x.dtype
    out = F.interpolate(x.float(), size=(h, w), mode=mode, **kwargs).to(dtype)
    return out.clamp(0, 1) if clamp else out


def _pil_to_array(img) -> np.ndarray:
    """PIL image → float32 HWC in [0,1], keeping 16-bit precision and alpha."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32) / (65535.0 if mode.startswith("I;16") else max(np.asarray(img).max(), 1))
        return arr[..., None]
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in mode else "RGB")
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def load_image(path: str | os.PathLike, keep_alpha: bool = False) -> torch.Tensor:
    """Read an image file → ``[1,3,H,W]`` float32 RGB in [0,1] (or ``[1,4,H,W]`` with ``keep_alpha``)."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not Path(path).is_file():
        raise FileNotFoundError(f"image file not found: '{path}'")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            arr = _pil_to_array(img)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError
            ) as exc:  # PIL reports bad files in all four; a bomb (too many pixels) is an Exception of its own
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageInputError(f"cannot read the image '{path}': {first}. Give a PNG, JPEG, WebP or TIFF file"
                              ) from None
    x = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0)
    rgb, alpha = split_alpha(x)
    return merge_alpha(rgb, alpha) if keep_alpha else rgb


def save_image(x: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write ``[1,C,H,W]`` / ``[C,H,W]`` in [0,1] as an 8-bit image (PNG keeps alpha)."""
    from PIL import Image

    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError("save_image writes one image; index the batch first")
        x = x[0]
    arr = (x.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255.0 + 0.5).astype(np.uint8)
    if arr.shape[-1] == 1:
        arr = arr[..., 0]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path
