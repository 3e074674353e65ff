"""SSEN reference-based ×4 super-resolution network (Shim, Park, Kweon, CVPR 2020), built from the paper.

Layout (state-dict prefixes):

* ``head``                      3→nf conv on the LR image
* ``body_pre.{i}`` / ``body_post.{i}``  residual blocks without BN (EDSR) or with channel attention (RCAN);
  the aligned reference features are fused between the two halves ("mid-level" fusion)
* ``body_conv``, ``upsample.{0,2}`` (two ×2 pixel-shuffle stages), ``tail``
* ``ssen.*``                    the Similarity Search and Extraction Network: reference encoder (pixel-unshuffle
  ×4 of the HR-sized reference, then convs), three stacked modulated deformable convolutions, each fed by its
  own dynamic offset estimator (3 stride-2 downsamplings with an embedded-Gaussian non-local block at every
  downsampled scale), the fusion convs, and ``ssen.to_pixels`` — a short path from the aligned reference
  features straight to the ×4 output through a pixel shuffle.

The output adds a bicubic ×4 upsampling of the input (global skip). Every hyper-parameter is read back from
tensor shapes by :func:`infer_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..shapes import count_blocks, dim
from .deform import ModulatedDeformConv2d

SCALE = 4


@dataclass(frozen=True)
class SSENConfig:
    nf: int = 32                 # feature channels
    n_pre: int = 4               # residual blocks before the fusion
    n_post: int = 4              # residual blocks after the fusion
    backbone: str = "edsr"       # "edsr" (no BN) or "rcan" (channel attention)
    ca_reduction: int = 8        # RCAN channel-attention reduction
    ref_blocks: int = 1          # residual blocks in the reference encoder
    est_nf: int = 32             # offset-estimator channels
    groups: int = 4              # deformable (offset) groups
    n_dcn: int = 3               # stacked deformable convolutions
    nonlocal_blocks: bool = True # non-local block at each estimator scale
    use_ssen: bool = True        # False: the same network without the reference branch (benchmarks)

    def to_json(self) -> dict:
        return asdict(self)


def _conv(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2)


class ResBlock(nn.Module):
    """conv-ReLU-conv (+ channel attention for RCAN) with identity skip; no batch norm."""

    def __init__(self, nf: int, ca_reduction: int | None = None) -> None:
        super().__init__()
        self.conv1 = _conv(nf, nf)
        self.conv2 = _conv(nf, nf)
        self.ca = None
        if ca_reduction:
            self.ca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(nf, nf // ca_reduction, 1), nn.ReLU(True),
                                    nn.Conv2d(nf // ca_reduction, nf, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        if self.ca is not None:
            y = y * self.ca(y)
        return x + y


class NonLocal(nn.Module):
    """Embedded-Gaussian non-local block (Wang et al. 2018) with a zero-initialised output projection."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        inner = max(nf // 2, 1)
        self.theta = nn.Conv2d(nf, inner, 1)
        self.phi = nn.Conv2d(nf, inner, 1)
        self.g = nn.Conv2d(nf, inner, 1)
        self.out = nn.Conv2d(inner, nf, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        q = self.theta(x).flatten(2).transpose(1, 2)[:, None]
        k = self.phi(x).flatten(2).transpose(1, 2)[:, None]
        v = self.g(x).flatten(2).transpose(1, 2)[:, None]
        y = F.scaled_dot_product_attention(q, k, v)  # softmax(θᵀφ / √d) g
        y = y[:, 0].transpose(1, 2).reshape(b, -1, h, w)
        return x + self.out(y)


class OffsetEstimator(nn.Module):
    """Dynamic offset estimator: U-shaped, 3 stride-2 downsamplings, a non-local block at each downsampled
    scale; predicts per-tap offsets (zero at init, bounded to ±MAX_OFFSET LR pixels by a scaled tanh) and
    modulation-mask logits for one deformable layer."""

    MAX_OFFSET = 16.0

    def __init__(self, nf: int, est_nf: int, groups: int, nonlocal_blocks: bool, taps: int = 9) -> None:
        super().__init__()
        self.groups, self.taps = groups, taps
        self.inp = _conv(2 * nf + 3, est_nf)  # + 3: the colour-difference cue (LR − box-downsampled ref)
        self.down = nn.ModuleList(_conv(est_nf, est_nf, 3, 2) for _ in range(3))
        self.nl = nn.ModuleList(NonLocal(est_nf) for _ in range(3)) if nonlocal_blocks else None
        self.up = nn.ModuleList(_conv(est_nf, est_nf) for _ in range(3))
        self.out = _conv(est_nf, 3 * groups * taps)
        nn.init.zeros_(self.out.weight)
        with torch.no_grad():
            self.out.bias.zero_()
            self.out.bias[2 * groups * taps:] = 3.0  # mask ≈ 0.95 at init: the reference passes through

    def forward(self, lr_feat: torch.Tensor, ref_feat: torch.Tensor, cue: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        act = nn.functional.leaky_relu
        feats = [act(self.inp(torch.cat((lr_feat, ref_feat, cue), 1)), 0.1)]
        for i, down in enumerate(self.down):
            y = act(down(feats[-1]), 0.1)
            if self.nl is not None:
                y = self.nl[i](y)
            feats.append(y)
        y = feats[-1]
        for i, up in enumerate(self.up):
            skip = feats[-2 - i]
            y = act(up(skip + F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)), 0.1)
        out = self.out(y)
        n = 2 * self.groups * self.taps
        offset = self.MAX_OFFSET * torch.tanh(out[:, :n] / self.MAX_OFFSET)
        return offset, torch.sigmoid(out[:, n:])


class SSENModule(nn.Module):
    """Reference encoder + stacked similarity-aware deformable alignment + fusion."""

    def __init__(self, cfg: SSENConfig) -> None:
        super().__init__()
        nf = cfg.nf
        self.ref_head = _conv(3 * SCALE * SCALE, nf)
        self.ref_body = nn.Sequential(*(ResBlock(nf) for _ in range(cfg.ref_blocks)))
        self.estimators = nn.ModuleList(
            OffsetEstimator(nf, cfg.est_nf, cfg.groups, cfg.nonlocal_blocks) for _ in range(cfg.n_dcn))
        self.dcns = nn.ModuleList(ModulatedDeformConv2d(nf) for _ in range(cfg.n_dcn))
        self.fuse1 = _conv(2 * nf, nf)
        self.fuse2 = _conv(nf, nf)
        self.to_pixels = _conv(nf, 3 * SCALE * SCALE)
        for m in (self.fuse2, self.to_pixels):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def align(self, lr: torch.Tensor, lr_feat: torch.Tensor, ref: torch.Tensor, keep_offsets: bool = False
              ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]]]:
        r = self.ref_body(self.ref_head(F.pixel_unshuffle(ref, SCALE)))
        cue = lr - F.avg_pool2d(ref, SCALE)  # where the reference's colours disagree with the input
        trace = []
        for est, dcn in zip(self.estimators, self.dcns):
            offset, mask = est(lr_feat, r, cue)
            r = dcn(r, offset, mask)
            if keep_offsets:
                trace.append((offset, mask))
        return r, trace

    def fuse(self, mid: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        return mid + self.fuse2(F.leaky_relu(self.fuse1(torch.cat((mid, aligned), 1)), 0.1))


class SSENet(nn.Module):
    """``model(lr, ref=None) -> sr``: ``lr`` ``[B,3,h,w]``, ``ref`` any size (resized to ``4h × 4w``) or None
    (self-similarity: the bicubic ×4 upsampling of ``lr`` itself is the reference)."""

    scale = SCALE

    def __init__(self, cfg: SSENConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = cfg or SSENConfig()
        nf = cfg.nf
        ca = cfg.ca_reduction if cfg.backbone == "rcan" else None
        self.head = _conv(3, nf)
        self.body_pre = nn.Sequential(*(ResBlock(nf, ca) for _ in range(cfg.n_pre)))
        self.body_post = nn.Sequential(*(ResBlock(nf, ca) for _ in range(cfg.n_post)))
        self.body_conv = _conv(nf, nf)
        self.upsample = nn.Sequential(_conv(nf, 4 * nf), nn.PixelShuffle(2), _conv(nf, 4 * nf), nn.PixelShuffle(2))
        self.tail = _conv(nf, 3)
        self.ssen = SSENModule(cfg) if cfg.use_ssen else None

    @staticmethod
    def prepare_reference(lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """The reference at exactly 4× the LR size (bicubic; antialiased when shrinking)."""
        h, w = lr.shape[-2:]
        if ref is None:
            ref = lr
        if ref.shape[0] not in (1, lr.shape[0]):
            raise ValueError(f"{ref.shape[0]} references for {lr.shape[0]} images: give one, or one per image")
        if ref.shape[-2:] != (SCALE * h, SCALE * w):
            shrink = ref.shape[-2] > SCALE * h or ref.shape[-1] > SCALE * w
            ref = F.interpolate(ref, size=(SCALE * h, SCALE * w), mode="bicubic", align_corners=False,
                                antialias=shrink)
        if ref.shape[0] != lr.shape[0]:
            ref = ref.expand(lr.shape[0], -1, -1, -1)
        return ref.to(lr.dtype)

    @staticmethod
    def consistency_gate(lr: torch.Tensor, ref: torch.Tensor, tau: float = 0.05) -> torch.Tensor:
        """Parameter-free reference-consistency gate ``[B,1,h,w]`` in (0, 1]: ≈1 where the reference, box-
        downsampled ×4, agrees in colour with the input (3×3-blurred mean absolute difference ``d``), falling as
        ``exp(-(d / tau)²)`` where it does not."""
        d = (lr - F.avg_pool2d(ref, SCALE)).abs().mean(1, keepdim=True)
        d = F.avg_pool2d(d, 3, 1, 1, count_include_pad=False)
        return torch.exp(-(d / tau) ** 2)

    def gated_reference(self, lr: torch.Tensor, ref: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Blend the reference with the self-similarity reference (``base`` = bicubic ×4 of ``lr``) by the
        consistency gate, so content that disagrees with the input is replaced by what no reference would give."""
        g = F.interpolate(self.consistency_gate(lr, ref), scale_factor=SCALE, mode="bilinear", align_corners=False)
        return g * ref + (1 - g) * base

    def forward(self, lr: torch.Tensor, ref: torch.Tensor | None = None, return_offsets: bool = False):
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise ValueError(f"SSEN expects an RGB batch [B,3,h,w]; got shape {tuple(lr.shape)}")
        base = F.interpolate(lr, scale_factor=SCALE, mode="bicubic", align_corners=False)
        x = self.head(lr)
        mid = self.body_pre(x)
        extra = 0
        trace: list = []
        if self.ssen is not None:
            ref = self.gated_reference(lr, self.prepare_reference(lr, ref), base) if ref is not None else base
            aligned, trace = self.ssen.align(lr, mid, ref, keep_offsets=return_offsets)
            mid = self.ssen.fuse(mid, aligned)
            extra = F.pixel_shuffle(self.ssen.to_pixels(aligned), SCALE)
        y = self.body_conv(self.body_post(mid)) + x
        sr = self.tail(self.upsample(y)) + base + extra
        return (sr, trace) if return_offsets else sr


def infer_config(sd: Mapping[str, torch.Tensor]) -> SSENConfig:
    """Hyper-parameters from tensor names and shapes."""
    keys = set(sd)
    if "head.weight" not in keys or "tail.weight" not in keys:
        raise ConfigError("not an SSEN state dict: 'head.weight' / 'tail.weight' missing")
    nf = dim(sd, "head.weight", 0, "SSEN")
    rcan = any(k.startswith("body_pre.0.ca.") for k in keys)
    ca_red = nf // dim(sd, "body_pre.0.ca.1.weight", 0, "SSEN") if rcan else 8
    use_ssen = any(k.startswith("ssen.") for k in keys)
    n_dcn = count_blocks(keys, "ssen.dcns.") if use_ssen else 3
    est_nf, groups, nonlocal_blocks = 32, 4, True
    if use_ssen:
        est_nf = dim(sd, "ssen.estimators.0.inp.weight", 0, "SSEN")
        groups = dim(sd, "ssen.estimators.0.out.weight", 0, "SSEN") // 27
        nonlocal_blocks = "ssen.estimators.0.nl.0.theta.weight" in keys
    return SSENConfig(nf=nf, n_pre=count_blocks(keys, "body_pre."), n_post=count_blocks(keys, "body_post."),
                      backbone="rcan" if rcan else "edsr", ca_reduction=ca_red,
                      ref_blocks=count_blocks(keys, "ssen.ref_body.") if use_ssen else 1,
                      est_nf=est_nf, groups=groups, n_dcn=n_dcn, nonlocal_blocks=nonlocal_blocks,
                      use_ssen=use_ssen)


def build_from_state_dict(sd: Mapping[str, torch.Tensor]) -> SSENet:
    """An eval-mode SSEN with the hyper-parameters of ``sd``, loaded strictly."""
    from .arch import ARCH

    return ARCH.load(sd).model


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

