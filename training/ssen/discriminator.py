"""The PatchGAN discriminator of SSEN's optional adversarial fine-tuning."""

from __future__ import annotations

import torch
from torch import nn


class PatchDiscriminator(nn.Module):
    """70×70-style PatchGAN (no normalisation, small)."""

    def __init__(self, nf: int = 32) -> None:
        super().__init__()
        layers, c = [], 3
        for co in (nf, 2 * nf, 4 * nf):
            layers += [nn.Conv2d(c, co, 4, 2, 1), nn.LeakyReLU(0.2, True)]
            c = co
        layers += [nn.Conv2d(c, 1, 4, 1, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
