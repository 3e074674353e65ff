"""Per-region DA-CLIP degradation map: DA-CLIP degradation probabilities of sliding windows at CLIP resolution,
blended into one probability map per label.

Windows: ``window`` pixels square (default: the model's input size, so a window is seen at its own pixel scale,
no resize), laid out by the pack's tiling toolkit (:func:`..tiling.grid`, overlap at most half a window, the last
window snapped to the border). Each window is classified exactly as :func:`..daclip.classify.classify` classifies
a whole image (``preprocess`` → ``encode_image`` → softmax of 100 × cosine to the label text embeddings).

Blending: window ``k`` adds ``p_k · w_k`` to the map, ``w`` the pack's ``linear`` blend window (a ramp over the
overlap, flat inside), and the map is ``Σ p_k w_k / Σ w_k``. A window's weight at its border is ``1/(overlap+1)``
of its inner weight, so where neighbouring windows disagree by Δp the map changes by at most about
``Δp/(overlap+1)`` per pixel: no steps at window seams (tested). Probabilities still sum to 1 at every pixel.

Memory: windows are classified ``window_batch`` at a time (the model's activations are bounded by that); the
map is accumulated on a plane whose longer side is at most ``max_map_side`` and upsampled bilinearly to the image
size only when masks are asked for.

Labels: the ten DA-CLIP degradations plus ``clean`` (:data:`MAP_LABELS`). DA-CLIP was not trained with a
"clean" class; its probability is the same cosine-softmax against the text "clean" and is only meaningful with
the released weights.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..daclip.classify import DEGRADATIONS, parse_labels, probabilities, text_features
from ..daclip.preprocess import preprocess
from ..errors import InputError
from ..image import check_finite, split_alpha
from ..progress import Counter, Progress
from ..tiling import blend_window, grid

CLEAN = "clean"
MAP_LABELS: tuple[str, ...] = (*DEGRADATIONS, CLEAN)
DEFAULT_WINDOW_BATCH = 16
MAX_MAP_SIDE = 1024

# A colour per map label for the preview (RGB in [0,1]); labels beyond the table get grey.
PALETTE: dict[str, tuple[float, float, float]] = {
    "motion-blurry": (0.95, 0.60, 0.10), "hazy": (0.65, 0.65, 0.95), "jpeg-compressed": (0.90, 0.20, 0.80),
    "low-light": (0.20, 0.20, 0.75), "noisy": (0.95, 0.15, 0.15), "raindrop": (0.10, 0.80, 0.80),
    "rainy": (0.10, 0.45, 0.95), "shadowed": (0.45, 0.30, 0.20), "snowy": (0.98, 0.98, 0.98),
    "uncompleted": (0.10, 0.10, 0.10), CLEAN: (0.20, 0.85, 0.25),
}


@dataclass(frozen=True)
class DegradationMap:
    """Per-pixel and whole-image degradation probabilities of a batch of images.

    ``probs`` ``[B, L, h, w]`` (float32, CPU; ``h × w`` is the image size or a reduced plane of the same aspect,
    see ``max_map_side``), ``global_probs`` ``[B, L]`` (the whole image classified as DA-CLIP Classify does),
    ``image_size`` the images' ``(H, W)``.
    """

    labels: tuple[str, ...]
    probs: torch.Tensor
    global_probs: torch.Tensor
    image_size: tuple[int, int]
    window: int
    overlap: int

    def __post_init__(self) -> None:
        if self.probs.ndim != 4 or self.probs.shape[1] != len(self.labels):
            raise InputError(f"DegradationMap.probs must be [B, {len(self.labels)}, h, w], got "
                             f"{tuple(self.probs.shape)}")
        if tuple(self.global_probs.shape) != (self.probs.shape[0], len(self.labels)):
            raise InputError(f"DegradationMap.global_probs must be [B, {len(self.labels)}], got "
                             f"{tuple(self.global_probs.shape)}")

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    def index(self, label: str) -> int:
        try:
            return self.labels.index(label)
        except ValueError:
            raise InputError(f"the degradation map has no label {label!r}; it has {', '.join(self.labels)}"
                             ) from None

    def masks(self, size: tuple[int, int] | None = None) -> torch.Tensor:
        """All label maps ``[B, L, H, W]`` at ``size`` (default: the image size), bilinear."""
        size = tuple(size or self.image_size)
        if tuple(self.probs.shape[-2:]) == size:
            return self.probs
        return F.interpolate(self.probs, size=size, mode="bilinear", align_corners=False)

    def mask(self, label: str, size: tuple[int, int] | None = None) -> torch.Tensor:
        """One label's map ``[B, H, W]`` (ComfyUI's MASK layout), values in [0, 1]."""
        i = self.index(label)
        return self.masks(size)[:, i].clamp(0, 1)

    def select(self, b: int | slice) -> DegradationMap:
        """The map of image ``b`` (batch axis kept) or of a slice of the batch; an index out of range raises."""
        if isinstance(b, slice):
            s = b
        else:
            n = len(self)
            if not -n <= b < n:
                raise IndexError(f"DegradationMap: index {b} out of range for {n} image(s)")
            s = slice(b % n, b % n + 1)
        return DegradationMap(self.labels, self.probs[s], self.global_probs[s], self.image_size, self.window,
                              self.overlap)


def _plane(h: int, w: int, max_side: int) -> tuple[int, int, float]:
    s = max(1.0, max(h, w) / max(1, int(max_side)))
    return max(1, math.ceil(h / s)), max(1, math.ceil(w / s)), s


def window_probabilities(model, windows: torch.Tensor, text: torch.Tensor, backend: str = "torch"
                         ) -> torch.Tensor:
    """Probabilities ``[N, L]`` of ``N`` windows ``[N,3,h,w]`` in [0,1] (the classify path of DA-CLIP)."""
    pixels = preprocess(windows.to(model.weight_device), model.image_size, backend=backend)
    with torch.no_grad():
        _clean, degra = model.encode_image(pixels, control=True)
    return probabilities(degra.float().cpu(), text)


def degradation_map(model, images: torch.Tensor, labels: Sequence[str] | str | None = None,
                    window: int | None = None, overlap: int | None = None,
                    window_batch: int = DEFAULT_WINDOW_BATCH, max_map_side: int = MAX_MAP_SIDE,
                    progress: Progress | None = None) -> DegradationMap:
    """The degradation map of ``images`` ``[B,C,H,W]`` in [0,1] (gray/alpha accepted).

    ``model`` is a DA-CLIP model or anything with its interface (``image_size``, ``weight_device``,
    ``encode_image(pixels, control=True)`` → (clean, degradation), ``encode_text(labels)``). ``labels`` default
    to :data:`MAP_LABELS`; ``window`` to the model's input size; ``overlap`` to half the window.
    """
    names = tuple(parse_labels(labels)) if labels is not None else MAP_LABELS
    rgb, _alpha = split_alpha(images)
    check_finite(rgb, "image to map")
    win = int(window or model.image_size)
    if win < 8:
        raise InputError(f"the map window must be at least 8 pixels, got {win}")
    ov = win // 2 if overlap is None else int(overlap)
    if ov < 0:
        raise InputError(f"the map window overlap must not be negative, got {ov}")
    if window_batch < 1:
        raise InputError(f"window_batch must be at least 1, got {window_batch}")
    b, _, h, w = rgb.shape
    g = grid(h, w, win, ov)
    ph, pw, s = _plane(h, w, max_map_side)
    counter = Counter(b * (len(g) + 1), progress)
    text = text_features(model, names)
    maps, globals_ = [], []
    for i in range(b):
        img = rgb[i:i + 1].float()
        globals_.append(window_probabilities(model, img, text)[0])
        counter.step()
        acc = torch.zeros(len(names), ph, pw, dtype=torch.float64)
        weight = torch.zeros(ph, pw, dtype=torch.float64)
        for start in range(0, len(g), window_batch):
            origins = g.origins[start:start + window_batch]
            crops = torch.cat([img[..., y:y + g.th, x:x + g.tw] for y, x in origins])
            probs = window_probabilities(model, crops, text).double()
            for (y, x), p in zip(origins, probs):
                y0, x0 = min(ph - 1, round(y / s)), min(pw - 1, round(x / s))
                # windows at the bottom/right border reach the plane's border (rounding the scaled end could stop
                # a row/column short of the ceil-sized plane: weight 0 there, a NaN stripe in the map)
                y1 = ph if y + g.th >= h else min(ph, max(y0 + 1, round((y + g.th) / s)))
                x1 = pw if x + g.tw >= w else min(pw, max(x0 + 1, round((x + g.tw) / s)))
                wts = blend_window(y1 - y0, x1 - x0, "linear", max(1, round(g.overlap / s)), dtype=torch.float64)
                acc[:, y0:y1, x0:x1] += p[:, None, None] * wts
                weight[y0:y1, x0:x1] += wts
            counter.step(len(origins))
        maps.append((acc / weight).float())
    return DegradationMap(names, torch.stack(maps), torch.stack(globals_), (h, w), win, g.overlap)


def preview(dmap: DegradationMap, images: torch.Tensor, alpha: float = 0.55, legend: bool = True) -> torch.Tensor:
    """A coloured overlay ``[B,3,H,W]``: each pixel tinted with the colour of its most likely label (opacity
    ``alpha`` × that label's probability), and a legend strip with the labels and colours beneath."""
    rgb, _ = split_alpha(images)
    h, w = rgb.shape[-2:]
    probs = dmap.masks((h, w))
    top_p, top_i = probs.max(dim=1)
    colours = torch.tensor([PALETTE.get(lbl, (0.5, 0.5, 0.5)) for lbl in dmap.labels], dtype=torch.float32)
    tint = colours[top_i].permute(0, 3, 1, 2)  # [B,3,H,W]
    a = (alpha * top_p)[:, None]
    out = rgb.float().cpu() * (1 - a) + tint * a
    if not legend:
        return out.clamp(0, 1)
    strip = legend_strip(dmap.labels, w, top_i)
    return torch.cat([out.clamp(0, 1), strip.expand(out.shape[0], -1, -1, -1)], dim=2)


def legend_strip(labels: Sequence[str], width: int, present: torch.Tensor | None = None) -> torch.Tensor:
    """``[1,3,h,width]``: a swatch and the name of each label (labels not present in ``present`` are skipped)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    shown = [i for i in range(len(labels)) if present is None or bool((present == i).any())] or [0]
    font = ImageFont.load_default()
    row_h, sw = 14, 10
    per_row = max(1, width // 120)
    rows = math.ceil(len(shown) / per_row)
    canvas = Image.new("RGB", (max(width, 1), rows * row_h + 4), (24, 24, 24))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(shown):
        x, y = (k % per_row) * 120 + 3, (k // per_row) * row_h + 3
        colour = tuple(int(c * 255) for c in PALETTE.get(labels[i], (0.5, 0.5, 0.5)))
        draw.rectangle([x, y, x + sw, y + sw], fill=colour)
        draw.text((x + sw + 4, y - 1), labels[i], fill=(230, 230, 230), font=font)
    arr = torch.from_numpy(np.asarray(canvas, dtype=np.float32) / 255.0).permute(2, 0, 1)[None]
    return arr
