"""SSEN reference-based ×4 super-resolution network (Shim, Park, Kweon, CVPR 2020), built from the paper.

Layout (state-dict prefixes):

* ``head``                      3→nf conv on the LR image
* ``body_pre.{i}`` / ``body_post.{i}``  residual blocks without BN (EDSR) or with channel attention (RCAN);
  the aligned reference features are fused between the two halves ("mid-level" fusion)
* ``body_conv``, ``upsample.convs.{0,1}`` (two bilinear ×2 + conv stages: no pixel shuffle, no checkerboard),
  ``tail``
* ``ssen.*``                    the Similarity Search and Extraction Network: a parameter-free coarse match
  (:mod:`.match`) pre-warps the reference and a parameter-free similarity gate judges it per position after
  alignment; the reference encoder (pixel-unshuffle ×4 of the HR-sized reference, then convs), three stacked
  modulated deformable convolutions, each fed by its own dynamic offset estimator (3 stride-2 downsamplings
  with an embedded-Gaussian non-local block at every downsampled scale), the fusion convs, and ``ssen.detail*``
  — the learned weight of the aligned reference's high-frequency detail, added to the output.

The output adds a bicubic ×4 upsampling of the input (global skip). Every hyper-parameter is read back from
tensor shapes by :func:`infer_config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, InputError
from ..shapes import count_blocks, dim
from .deform import ModulatedDeformConv2d
from .match import box, coarse_flow, luma, ncc, warp
from .resample import SCALE, bicubic_downscale, bicubic_up, resize_bicubic
from .scale import align_candidate, choose, frame_flow, global_candidates, pick

GATE_NCC = (0.8, 0.97)     # similarity gate: NCC mapped from 0 to 1 (strict: a reference may be useless, never harmful)
GATE_SPREAD = (0.5, 2.0)   # similarity gate: flow spread (LR px) mapped from 1 to 0
HP_SIGMA = 1.5             # detail high-pass (HR px)


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
    hr_nf: int = 16              # channels of the last (×4) upsampling stage

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def paper(cls, **overrides) -> SSENConfig:
        """The paper-size network: 64 features, 16 residual blocks (8 before and 8 after the fusion), 64-channel
        offset estimators (≈ 2.8 M parameters, 11 MB in fp32)."""
        return cls(**{"nf": 64, "n_pre": 8, "n_post": 8, "est_nf": 64, "hr_nf": 32, **overrides})


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

    MAX_OFFSET = 4.0  # residual to the coarse match

    def __init__(self, nf: int, est_nf: int, groups: int, nonlocal_blocks: bool, taps: int = 9) -> None:
        super().__init__()
        self.groups, self.taps = groups, taps
        self.inp = _conv(2 * nf + 3, est_nf)  # + 3: colour difference between the input and the gated reference
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


def highpass(x: torch.Tensor, sigma: float = HP_SIGMA) -> torch.Tensor:
    """``x`` minus its Gaussian blur (σ = 1.5 HR px: half power at the LR Nyquist frequency, 6 % left at a
    4-pixel period); separable, edge-replicated."""
    r = 4
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).view(1, 1, 1, -1)
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.expand(c, 1, 1, -1), groups=c)
    y = F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x - y


def warp_hr(img: torch.Tensor, flow_lr: torch.Tensor, origin: tuple[int, int] | None = None) -> torch.Tensor:
    """Sample the HR-sized ``img`` at ``Q + 4·flow(Q/4)``: an LR displacement field applied at HR. ``origin``
    (LR px): ``img`` is a larger window holding the field's pixel (0, 0) at ``4·origin``."""
    flow_hr = SCALE * F.interpolate(flow_lr, scale_factor=SCALE, mode="bilinear", align_corners=False)
    hr_origin = None if origin is None else (SCALE * origin[0], SCALE * origin[1])
    return warp(img, flow_hr, mode="bicubic", origin=hr_origin)


def flow_spread(flow: torch.Tensor, k: int = 5) -> torch.Tensor:
    """Local spread of a displacement field ``[B,2,h,w]``: sqrt of the summed k×k variances of dy and dx, in LR
    pixels. A true match moves neighbouring pixels together (a shift, a zoom or a small rotation keeps it well
    under one pixel); matches into an unrelated image scatter (several pixels)."""
    m = box(flow, k)
    return (box(flow * flow, k) - m * m).clamp_min(0).sum(1, keepdim=True).sqrt()


def similarity_gate(lr: torch.Tensor, ref_lr: torch.Tensor, flow: torch.Tensor | None = None,
                    spread: torch.Tensor | None = None) -> torch.Tensor:
    """Parameter-free per-position gate ``[B,1,h,w]`` in [0, 1], judged after the coarse alignment: the local 7×7
    luma NCC between the input and the aligned reference at the input's scale, mapped linearly from GATE_NCC[0]
    (0) to GATE_NCC[1] (1), times the coherence of the match, mapped from GATE_SPREAD[1] px of flow spread (0) to
    GATE_SPREAD[0] (1), then a 5×5 morphological opening. Flat windows score 0 (variance floor): without evidence
    in the input, or where the match is incoherent or isolated, the reference is not trusted."""
    with torch.no_grad():
        rho = ncc(luma(lr), luma(ref_lr), 7)
        g_ncc = ((rho - GATE_NCC[0]) / (GATE_NCC[1] - GATE_NCC[0])).clamp(0, 1)
        if spread is None:
            spread = flow_spread(flow)
        g_coh = ((GATE_SPREAD[1] - spread) / (GATE_SPREAD[1] - GATE_SPREAD[0])).clamp(0, 1)
        g = g_ncc * g_coh
        # morphological opening (5×5 erosion, then dilation): true matches cover regions, chance matches
        # into an unrelated image are isolated specks
        g = -F.max_pool2d(-g, 5, 1, 2)
        g = F.max_pool2d(g, 5, 1, 2)
    return g


def layer_displacement(offset: torch.Tensor, taps: int = 9) -> torch.Tensor:
    """Mean displacement (dy, dx) of one deformable layer's sampling pattern: the offsets averaged over the
    taps and offset groups (the regular 3×3 positions average to zero). ``[B,2,h,w]``."""
    b, _, h, w = offset.shape
    return offset.view(b, -1, taps, 2, h, w).mean((1, 2))


def compose_displacement(offsets: list[torch.Tensor]) -> torch.Tensor:
    """Where the last of the stacked deformable layers reads the first one's input, in LR pixels: the last layer
    reads its input at ``p + δₙ(p)``, which read the one before at ``+ δₙ₋₁(p + δₙ)``, and so on. The first
    layer's input is the reference pre-warped by the coarse match ``flow0``, so the full displacement is
    ``D + flow0(p + D)`` (see :meth:`SSENModule.align`)."""
    d = layer_displacement(offsets[-1])
    for off in reversed(offsets[:-1]):
        d = d + warp(layer_displacement(off), d)
    return d


@dataclass
class Match:
    """The parameter-free match of an input ``[B,3,h,w]`` in a reference: ``ref`` ``[B,3,4h,4w]`` the reference on
    the output grid (resized to the output's frame, or — where a scale/rotation candidate matched better — sampled
    through that candidate's transform and local displacement), ``flow`` ``[B,2,h,w]`` the displacement still to
    apply to ``ref`` (LR px; zero where a candidate's alignment is already in ``ref``), ``gate`` ``[B,1,h,w]`` the
    similarity gate, ``zoom`` ``[B,1,h,w]`` the chosen scale (reference px per output px), ``angle`` (degrees) and
    ``inside`` ``[B,2,h,w]`` the part of the alignment already inside ``ref``, as a displacement (LR px) in the
    reference resized to the output's frame (zero when ``ref`` is that resized reference)."""
    ref: torch.Tensor
    flow: torch.Tensor
    gate: torch.Tensor
    zoom: torch.Tensor
    angle: torch.Tensor
    inside: torch.Tensor

    FIELDS = ("ref", "flow", "gate", "zoom", "angle", "inside")

    @staticmethod
    def cat(ms: list[Match]) -> Match:
        return Match(*(torch.cat([getattr(m, f) for m in ms]) for f in Match.FIELDS))


def _frame_match(lr: torch.Tensor, ref4: torch.Tensor, zoom: float, flow0: torch.Tensor | None = None) -> Match:
    """The match within the output's frame: the ±16 LR px search (unless ``flow0`` is given) and the gate on
    ``ref4`` (``4h × 4w``)."""
    if flow0 is None:
        flow0, _ = coarse_flow(lr, bicubic_downscale(ref4))
    gate = similarity_gate(lr, bicubic_downscale(warp_hr(ref4, flow0)), flow0)
    z = torch.full_like(gate, zoom)
    return Match(ref4, flow0, gate, z, torch.zeros_like(gate), torch.zeros_like(flow0))


def _match_one(lr: torch.Tensor, ref: torch.Tensor, scale_search: bool) -> Match:
    """One image: the reference resized to the output's frame (candidate 0) and every scale/rotation candidate
    (:func:`.scale.global_candidates`), chosen per region by the smoothed match NCC."""
    h, w = lr.shape[-2:]
    frame = SSENet.prepare_reference(lr, ref)
    zf = float((ref.shape[-2] * ref.shape[-1] / (SCALE * SCALE * h * w)) ** 0.5)
    cands = global_candidates(lr, ref) if scale_search else []
    found = [(c, align_candidate(lr, ref, c)) for c in cands]
    found = [(c, r) for c, r in found if r is not None]
    if not found:
        return _frame_match(lr, frame, zf)
    flow_f, score_f = coarse_flow(lr, bicubic_downscale(frame))
    idx = choose([score_f] + [r[2] for _, r in found])
    if bool((idx == 0).all()):
        return _frame_match(lr, frame, zf, flow_f)
    aligned = pick([warp_hr(frame, flow_f)] + [r[0] for _, r in found], idx)
    spread = pick([flow_spread(flow_f)] + [flow_spread(r[1]) for _, r in found], idx)
    gate = similarity_gate(lr, bicubic_downscale(aligned), spread=spread)
    zoom = pick([torch.full_like(score_f, zf)] + [torch.full_like(score_f, c.zoom) for c, _ in found], idx)
    angle = pick([torch.zeros_like(score_f)] + [torch.full_like(score_f, c.angle) for c, _ in found], idx)
    frame_px = (ref.shape[-2] / h, ref.shape[-1] / w)  # native px per LR px of the output's frame
    inside = pick([flow_f] + [frame_flow(c, r[1], frame_px) for c, r in found], idx)
    return Match(aligned, torch.zeros_like(flow_f), gate, zoom, angle, inside)


class SSENModule(nn.Module):
    """Coarse match + reference encoder + stacked similarity-aware deformable alignment + fusion + detail head."""

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
        self.detail1 = _conv(2 * nf, nf // 2)
        self.detail2 = _conv(nf // 2, 1)
        for m in (self.fuse2, self.detail2):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    @staticmethod
    def match(lr: torch.Tensor, ref: torch.Tensor | None, scale_search: bool = True) -> Match:
        """The parameter-free part (float32, no gradient): ``ref`` (any size; None = self-similarity) brought onto
        the output grid — searched over scales and small rotations (:mod:`.scale`) and per position aligned by
        the ±16 LR px displacement search — and the similarity gate judged after that alignment. See
        :class:`Match`."""
        lr = lr.float()
        if ref is None:
            return _frame_match(lr, bicubic_up(lr), 1.0)
        refs = SSENet.pair_reference(lr, ref.float())
        return Match.cat([_match_one(lr[i:i + 1], refs[min(i, refs.shape[0] - 1)][None], scale_search)
                          for i in range(lr.shape[0])])

    def align(self, lr: torch.Tensor, lr_feat: torch.Tensor, ref: torch.Tensor, base: torch.Tensor,
              match: tuple[torch.Tensor, torch.Tensor], origin: tuple[int, int] | None = None
              ) -> dict[str, torch.Tensor | list]:
        """``ref`` is the matched reference (``Match.ref``, ``4h × 4w``) and ``match`` its ``(flow, gate)``; or, for
        a tile, a larger window of it holding the tile's pixel (0, 0) at ``4·origin`` (LR px) and the tile's part of
        the whole image's ``(flow, gate)``."""
        flow0, gate = match
        pre = warp_hr(ref, flow0, origin)
        # the parameter-free match runs in float32; the flow stays float32 (positions), the rest takes the model's
        g_hr = F.interpolate(gate, scale_factor=SCALE, mode="bilinear", align_corners=False).to(lr.dtype)
        ref_in = g_hr * pre + (1 - g_hr) * base
        r = self.ref_body(self.ref_head(F.pixel_unshuffle(ref_in, SCALE)))
        cue = lr - bicubic_downscale(ref_in)  # no gate channel: gate 0 must look exactly like self-similarity
        offsets, masks = [], []
        for est, dcn in zip(self.estimators, self.dcns):
            offset, mask = est(lr_feat, r, cue)
            r = dcn(r, offset, mask)
            offsets.append(offset)
            masks.append(mask)
        residual = compose_displacement(offsets)
        disp = residual + warp(flow0, residual)
        # every reference-dependent input falls back to the self-similarity reference where the gate is shut, so a
        # reference gated off everywhere gives exactly the self-similarity result
        warped = g_hr * warp_hr(ref, disp, origin) + (1 - g_hr) * warp_hr(base, residual)
        # the detail the input lacks: (aligned reference − bicubic input) above the LR Nyquist frequency (a
        # shift-invariant Gaussian high-pass, so no 4-pixel period is imprinted); exactly 0 for the
        # self-similarity reference, ≈ the true residual for an aligned ground truth
        detail = highpass(warped - base)
        return {"aligned": r, "detail": detail, "gate": gate, "flow0": flow0, "displacement": disp,
                "offsets": offsets, "masks": masks}

    def fuse(self, mid: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        return mid + self.fuse2(F.leaky_relu(self.fuse1(torch.cat((mid, aligned), 1)), 0.1))

    def detail_weight(self, mid: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        """Per-position weight in (0, 1) of the aligned reference's detail (learned)."""
        return torch.sigmoid(self.detail2(F.leaky_relu(self.detail1(torch.cat((mid, aligned), 1)), 0.1)))


class Upsampler(nn.Module):
    """×4 by two (bilinear ×2 → 3×3 conv → LeakyReLU) stages: no pixel shuffle, so no sub-pixel phase can
    learn its own bias (the checkerboard); the first stage keeps ``nf`` channels, the second ``hr_nf``."""

    def __init__(self, nf: int, hr_nf: int) -> None:
        super().__init__()
        self.convs = nn.ModuleList((_conv(nf, nf), _conv(nf, hr_nf)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = F.leaky_relu(conv(F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)), 0.1)
        return x


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
        self.upsample = Upsampler(nf, cfg.hr_nf)
        self.tail = _conv(cfg.hr_nf, 3)
        self.ssen = SSENModule(cfg) if cfg.use_ssen else None
        self.scale_search = True  # search the reference over scales and rotations (:mod:`.scale`)

    @staticmethod
    def pair_reference(lr: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """``ref`` checked against the batch of ``lr``: one reference for every image, or one per image."""
        if ref.shape[0] not in (1, lr.shape[0]):
            raise InputError(f"{ref.shape[0]} references for {lr.shape[0]} images: give one, or one per image")
        return ref

    @staticmethod
    def prepare_reference(lr: torch.Tensor, ref: torch.Tensor | None) -> torch.Tensor:
        """The reference resized to exactly 4× the LR size (bicubic; antialiased when shrinking): the output's
        frame, candidate 0 of the match."""
        h, w = lr.shape[-2:]
        if ref is None:
            ref = lr
        ref = SSENet.pair_reference(lr, ref)
        if ref.shape[-2:] != (SCALE * h, SCALE * w):
            shrink = ref.shape[-2] > SCALE * h or ref.shape[-1] > SCALE * w
            ref = resize_bicubic(ref, (SCALE * h, SCALE * w), antialias=shrink)
        if ref.shape[0] != lr.shape[0]:
            ref = ref.expand(lr.shape[0], -1, -1, -1)
        return ref.to(lr.dtype)

    def forward(self, lr: torch.Tensor, ref: torch.Tensor | None = None, return_offsets: bool = False,
                ref_origin: tuple[int, int] | None = None, match: tuple[torch.Tensor, torch.Tensor] | None = None):
        """×4 SR of ``lr`` ``[B,3,h,w]`` with ``ref`` (any size and zoom; ``None``: self-similarity).

        Tiles (:func:`..infer.super_resolve`): ``match`` is the tile's part of ``(Match.flow, Match.gate)`` of
        :meth:`SSENModule.match` computed on the whole image, and ``ref`` a window of ``Match.ref`` (4h×4w) around
        the tile whose pixel ``4·ref_origin`` is the tile's pixel (0, 0) — so the tile reads the whole image's
        displacement and the content it points to, also beyond the tile (the window's sides must be multiples of
        4)."""
        if lr.ndim != 4 or lr.shape[1] != 3:
            raise InputError(f"SSEN expects an RGB batch [B,3,h,w]; got shape {tuple(lr.shape)}")
        if ref_origin is not None and (ref is None or ref.shape[-2] % SCALE or ref.shape[-1] % SCALE
                                       or ref.shape[0] != lr.shape[0]):
            raise InputError("a reference window (ref_origin) needs a reference of the batch's size whose sides are "
                             f"multiples of {SCALE}")
        if ref_origin is not None:
            (oy, ox), (h, w) = ref_origin, lr.shape[-2:]
            if oy < 0 or ox < 0 or SCALE * (oy + h) > ref.shape[-2] or SCALE * (ox + w) > ref.shape[-1]:
                raise InputError(f"a {w}×{h} tile at {tuple(ref_origin)} does not lie inside its reference window "
                                 f"{ref.shape[-1]}×{ref.shape[-2]}")
        base = bicubic_up(lr)
        x = self.head(lr)
        mid = self.body_pre(x)
        extra = 0
        trace: dict = {}
        if self.ssen is not None:
            if ref_origin is None or match is None:
                if ref_origin is not None or match is not None:
                    raise InputError("a reference window (ref_origin) and the whole image's match go together")
                m = self.ssen.match(lr, ref, self.scale_search)
                ref, match = m.ref, (m.flow, m.gate)
                trace["zoom"], trace["angle"] = m.zoom, m.angle
            trace.update(self.ssen.align(lr, mid, ref.to(lr.dtype), base, match, ref_origin))
            mid = self.ssen.fuse(mid, trace["aligned"])
            weight = self.ssen.detail_weight(mid, trace["aligned"])
            trace["detail_weight"] = weight
            extra = F.interpolate(weight, scale_factor=SCALE, mode="bilinear", align_corners=False) * trace["detail"]
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
                      use_ssen=use_ssen, hr_nf=dim(sd, "tail.weight", 1, "SSEN"))


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())

