"""A deterministic stand-in for DA-CLIP with the model's interface (``image_size``, ``weight_device``,
``encode_image(pixels, control=True)``, ``encode_text(labels)``), for testing the degradation map's mechanics
without the released weights.

Rules on the de-normalised window (the pixels DA-CLIP would see): ``noisy`` grows with the local high-frequency
energy (mean |x − 3×3 box blur|), ``hazy`` grows as the contrast (std of luminance) falls, ``clean`` is a
constant. The degradation embedding has those three scores on the label's axis; each label's text embedding is
its axis (one-hot), so DA-CLIP's softmax(100 · cosine) turns the largest score into the top label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from aware_restore.core.daclip.preprocess import OPENAI_MEAN, OPENAI_STD

AXES = ("motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy", "raindrop", "rainy", "shadowed", "snowy",
        "uncompleted", "clean")


class ProbeDaclip(torch.nn.Module):
    def __init__(self, image_size: int = 32, noise_scale: float = 0.04, contrast_ref: float = 0.06,
                 forced: dict[str, float] | None = None) -> None:
        super().__init__()
        self.image_size = image_size
        self.noise_scale, self.contrast_ref = noise_scale, contrast_ref
        self.forced = forced  # fixed scores per label (for router cases): ignores the pixels
        self.register_buffer("anchor", torch.zeros(1))
        self.calls = 0
        self.max_batch = 0

    @property
    def weight_device(self) -> torch.device:
        return self.anchor.device

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        e = torch.zeros(n, len(AXES))
        if self.forced is not None:
            for lbl, v in self.forced.items():
                e[:, AXES.index(lbl)] = v
            return e
        hf = (x - F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)).abs().mean(dim=(1, 2, 3))
        lum = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
        contrast = lum.flatten(1).std(dim=1)
        e[:, AXES.index("noisy")] = hf / self.noise_scale
        e[:, AXES.index("hazy")] = self.contrast_ref / contrast.clamp_min(1e-3)
        e[:, AXES.index("clean")] = 1.0
        return e

    def encode_image(self, pixels: torch.Tensor, control: bool = True):
        assert pixels.shape[-2:] == (self.image_size, self.image_size)
        self.calls += 1
        self.max_batch = max(self.max_batch, pixels.shape[0])
        mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
        x = pixels.float().cpu() * std + mean
        e = self.scores(x)
        return e.clone(), e

    def encode_text(self, labels):
        out = torch.zeros(len(labels), len(AXES))
        for i, lbl in enumerate(labels):
            if lbl in AXES:
                out[i, AXES.index(lbl)] = 1.0
            else:
                out[i, -1] = 1e-3
        return out


def left_noisy_right_hazy(h: int = 96, w: int = 192, seed: int = 0) -> torch.Tensor:
    """``[1,3,h,w]``: a mid-contrast pattern with strong noise on the left half, a faint low-contrast version on
    the right half."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    base = torch.stack([0.5 + 0.25 * torch.sin(xx / (6 + 2 * c) + yy / (9 + c)) for c in range(3)])[None]
    left = (base + 0.15 * torch.randn(base.shape, generator=g)).clamp(0, 1)
    right = 0.6 + 0.08 * (base - 0.5)
    out = right.clone()
    out[..., : w // 2] = left[..., : w // 2]
    return out


def short_schedule() -> None:
    """Ray worker set-up hook (and subprocess helper): a 2-step IR-SDE schedule, for tests whose outcome does
    not depend on the 100 steps (routing, sidecars, resume, Ray vs local equality)."""
    from aware_restore.core.irsde.sde import IRSDE

    IRSDE.timesteps = lambda self: [2, 1]
