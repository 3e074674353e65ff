"""Training / validation data for SSEN: HR photos, bicubic ×4 LR, and references of several kinds.

Sources: the package photo set (``photo_samples``, prepared by :mod:`.photos`; the shipped model's training
data), a folder of HR images (optionally a paired LR folder and a reference folder), or the photos bundled with
scikit-image (``builtin_photos``) — a small reproducible set that needs no download.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ...core.ssen.resample import bicubic_downscale

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# scikit-image's bundled photos (no download needed). Grey ones are replicated to RGB.
TRAIN_PHOTOS = ("chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina", "camera",
                "brick", "grass", "gravel", "moon", "coins", "page", "text", "clock")
HOLDOUT_ROW = 300  # motorcycle stereo pair: rows < 300 train, rows >= 300 held out
HOLDOUT_PHOTOS = ("astronaut",)


@dataclass
class Sample:
    """One training image: HR ``[3,H,W]``, optional LR ``[3,H/4,W/4]``, optional list of references."""
    name: str
    hr: torch.Tensor
    lr: torch.Tensor | None = None
    refs: list[torch.Tensor] = field(default_factory=list)
    aligned_refs: bool = False  # references are geometrically close (stereo / video) rather than just similar


def _to_tensor(arr: np.ndarray) -> torch.Tensor:
    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
    return torch.from_numpy(arr.astype(np.float32) / scale).permute(2, 0, 1).contiguous()


def _skimage_photo(name: str) -> torch.Tensor:
    import skimage.data as skd

    return _to_tensor(getattr(skd, name)())


def motorcycle_pair() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-image's rectified stereo pair (left, right), ``[3,500,741]`` each."""
    import skimage.data as skd

    left, right, _ = skd.stereo_motorcycle()
    return _to_tensor(left), _to_tensor(right)


def builtin_photos(split: str = "train") -> list[Sample]:
    """scikit-image photos: ``train`` (TRAIN_PHOTOS + motorcycle rows < 300 with its stereo partner) or
    ``holdout`` (astronaut + motorcycle rows >= 300 with its stereo partner)."""
    try:
        import skimage  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("the built-in photo set needs scikit-image (pip install scikit-image)") from exc
    left, right = motorcycle_pair()
    if split == "train":
        out = [Sample(n, _skimage_photo(n)) for n in TRAIN_PHOTOS]
        out.append(Sample("motorcycle_left_top", left[:, :HOLDOUT_ROW], refs=[right[:, :HOLDOUT_ROW]],
                          aligned_refs=True))
        out.append(Sample("motorcycle_right_top", right[:, :HOLDOUT_ROW], refs=[left[:, :HOLDOUT_ROW]],
                          aligned_refs=True))
        return out
    if split == "holdout":
        out = [Sample(n, _skimage_photo(n)) for n in HOLDOUT_PHOTOS]
        out.append(Sample("motorcycle_left_bottom", left[:, HOLDOUT_ROW:], refs=[right[:, HOLDOUT_ROW:]],
                          aligned_refs=True))
        return out
    raise ValueError(f"unknown split {split!r}")


def _load_u8(path: Path) -> torch.Tensor:
    from PIL import Image

    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy()).permute(2, 0, 1).contiguous()


def photo_samples(root: str | Path) -> list[Sample]:
    """The prepared photo set's training split (``root/train/*.png``, kept as uint8) and rows < 300 of the
    motorcycle stereo pair, each view the other's reference."""
    root = Path(root)
    files = sorted((root / "train").glob("*.png"))
    if not files:
        raise FileNotFoundError(f"no training photos in {root}/train (prepare them with "
                                "training.ssen.photos.prepare_photos)")
    out = [Sample(p.stem, _load_u8(p)) for p in files]
    left, right = _load_u8(root / "stereo" / "motorcycle_left.png"), _load_u8(root / "stereo" / "motorcycle_right.png")
    for a, b, name in ((left, right, "motorcycle_left_top"), (right, left, "motorcycle_right_top")):
        out.append(Sample(name, a[:, :HOLDOUT_ROW].contiguous(), refs=[b[:, :HOLDOUT_ROW].contiguous()],
                          aligned_refs=True))
    return out


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)


def folder_samples(hr_dir: str | Path, lr_dir: str | Path | None = None, ref_dir: str | Path | None = None,
                   aligned_refs: bool = False) -> list[Sample]:
    """HR images from ``hr_dir``; LR with the same file stem from ``lr_dir`` (else bicubic ×4 down);
    references from ``ref_dir``: CUFED training layout (``ref/<stem>.png`` beside ``input/<stem>.png``) or
    CUFED5 layout (``<id>_1.png`` … ``<id>_5.png`` for ``<id>_0.png``). Images with no reference train in
    self-reference mode."""
    from ...core.image import load_image

    hr_dir = Path(hr_dir)
    files = _list_images(hr_dir)
    if not files:
        raise FileNotFoundError(f"no images in '{hr_dir}'")
    lr_map = {p.stem: p for p in _list_images(Path(lr_dir))} if lr_dir else {}
    ref_files = _list_images(Path(ref_dir)) if ref_dir else []
    out = []
    for p in files:
        stem = p.stem
        if ref_dir and Path(ref_dir).resolve() == hr_dir.resolve() and not stem.endswith("_0") and "_" in stem:
            continue  # CUFED5: only <id>_0 are inputs
        base = stem.removesuffix("_0")
        refs = [r for r in ref_files if r.stem == stem and r != p]
        refs += [r for r in ref_files if r.stem.startswith(base + "_") and r.stem != stem and r != p]
        s = Sample(stem, load_image(p)[0], refs=[load_image(r)[0] for r in refs], aligned_refs=aligned_refs)
        if stem in lr_map:
            s.lr = load_image(lr_map[stem])[0]
        out.append(s)
    return out


def make_lr(hr: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """The low-resolution image of ``hr``: :func:`...core.ssen.resample.bicubic_downscale`, clamped to [0, 1]."""
    return bicubic_downscale(hr, scale).clamp(0, 1)


def augment(x: torch.Tensor, k: int, flip: bool) -> torch.Tensor:
    x = torch.rot90(x, k, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if flip else x
