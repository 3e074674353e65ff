"""Swin Transformer image encoder in the original (Microsoft / RAM) checkpoint layout.

Written here rather than taken from timm: timm >= 0.9 puts the patch merging at the START of the next stage
(``layers.{i+1}.downsample``), keeps tokens in NHWC and renames keys through ``checkpoint_filter_fn``, whereas
RAM's checkpoint has ``layers.{i}.downsample`` at the END of stage ``i`` and flat token sequences. A direct,
strict key mapping is simpler and avoids a dependency. Every hyper-parameter comes from tensor shapes
(see ``SwinConfig.from_state_dict``); the ``relative_position_index`` and ``attn_mask`` buffers are recomputed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..shapes import count_blocks, shape

MASK_VALUE = -100.0  # the value the official Swin puts between tokens of different shifted regions


@dataclass(frozen=True)
class SwinConfig:
    embed_dim: int
    depths: tuple[int, ...]
    heads: tuple[int, ...]
    window: int
    patch: int = 4
    in_chans: int = 3
    mlp_ratio: float = 4.0
    image_size: int = 384

    @property
    def out_dim(self) -> int:
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def grid(self) -> int:
        """Side of the final token grid (12 for RAM at 384 px)."""
        return self.image_size // self.patch // 2 ** (len(self.depths) - 1)

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor], prefix: str = "", image_size: int | None = None,
                        ) -> SwinConfig:
        proj = shape(sd, f"{prefix}patch_embed.proj.weight", 4, "Swin")
        stages = count_blocks(sd, f"{prefix}layers.", "Swin stages")
        depths = [count_blocks(sd, f"{prefix}layers.{i}.blocks.", "Swin blocks") for i in range(stages)]
        if not stages or not all(depths):
            raise ConfigError("not a Swin state dict: no consecutive 'layers.<i>.blocks.<j>' keys")
        heads, window = [], None
        for i in range(stages):
            table = shape(sd, f"{prefix}layers.{i}.blocks.0.attn.relative_position_bias_table", 2, "Swin")
            heads.append(int(table[1]))
            w = (math.isqrt(int(table[0])) + 1) // 2
            if (2 * w - 1) ** 2 != table[0] or (window is not None and w != window):
                raise ConfigError(f"unexpected relative position table shape {table} in stage {i}")
            window = w
        dim = int(proj[0])
        mlp = shape(sd, f"{prefix}layers.0.blocks.0.mlp.fc1.weight", 2, "Swin")[0] / dim
        patch = int(proj[-1])
        if image_size is None:
            image_size = image_size_from_masks(sd, window, patch, prefix) or 384  # RAM's input size
        return cls(dim, tuple(depths), tuple(heads), window, patch, int(proj[1]), float(mlp), int(image_size))


def image_size_from_masks(sd: Mapping[str, torch.Tensor], window: int, patch: int, prefix: str = "") -> int | None:
    """Input size implied by a stored ``attn_mask`` buffer ([nW, N, N] in stage i), or None without one."""
    for k, t in sd.items():
        m = re.fullmatch(re.escape(prefix) + r"layers\.(\d+)\.blocks\.\d+\.attn_mask", k)
        if m and t.ndim == 3:
            return math.isqrt(int(t.shape[0])) * window * patch * 2 ** int(m.group(1))
    return None


def relative_position_index(window: int) -> torch.Tensor:
    """idx[i, j] = (Δy + w - 1)·(2w - 1) + (Δx + w - 1), Δ = position(i) − position(j), row-major windows."""
    ys, xs = torch.meshgrid(torch.arange(window, device="cpu"), torch.arange(window, device="cpu"),
                            indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + window - 1
    dx = xs[:, None] - xs[None, :] + window - 1
    return dy * (2 * window - 1) + dx


def shift_mask(res: int, window: int, shift: int) -> torch.Tensor:
    """[nW, N, N] additive mask (0 / −100) for a cyclically shifted grid of side ``res``."""
    labels = torch.zeros(res, res, dtype=torch.long, device="cpu")
    cuts = (slice(0, res - window), slice(res - window, res - shift), slice(res - shift, res))
    n = 0
    for hs in cuts:
        for ws in cuts:
            labels[hs, ws] = n
            n += 1
    win = labels.view(res // window, window, res // window, window).permute(0, 2, 1, 3).reshape(-1, window * window)
    diff = win[:, :, None] != win[:, None, :]
    return torch.zeros(diff.shape, device="cpu").masked_fill(diff, MASK_VALUE)


class WindowAttention(nn.Module):
    """Windowed multi-head self-attention with a relative-position bias (and, in shifted blocks, the shift mask).

    The bias and mask enter :func:`~torch.nn.functional.scaled_dot_product_attention` as one 4-D additive mask
    (``[1, heads, N, N]`` or ``[nW, heads, N, N]``) over 4-D ``q/k/v`` (``[B*nW, heads, N, d]``): with that layout
    PyTorch's fused CPU/GPU kernels accept the float mask, where a 5-D or 3-D one falls back to the unfused path.
    Bias + mask are combined once and cached per (device, dtype) while inference runs (no autograd through the
    table); the cache is rebuilt whenever the bias table's values, device or dtype, or the mask tensor, change.
    """

    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads, self.window = heads, window
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        self.register_buffer("rel_index", relative_position_index(window), persistent=False)
        self._bias_cache: tuple | None = None  # (table copy, mask, dtype, combined bias)

    def _table_bias(self, dtype: torch.dtype) -> torch.Tensor:
        table = self.relative_position_bias_table
        n = self.window * self.window
        return table[self.rel_index.to(table.device).view(-1)].view(n, n, -1).permute(2, 0, 1).to(dtype)

    def attn_bias(self, mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """The additive attention mask: ``[1, heads, N, N]`` (no shift) or ``[nW, heads, N, N]``."""
        table = self.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:  # training: stay differentiable, no cache
            bias = self._table_bias(dtype).unsqueeze(0)
            return bias if mask is None else bias + mask.to(device=table.device, dtype=dtype).unsqueeze(1)
        c = self._bias_cache
        if (c is not None and c[1] is mask and c[2] == dtype and c[0].device == table.device
                and c[0].dtype == table.dtype and torch.equal(c[0], table)):
            return c[3]
        with torch.no_grad():
            bias = self._table_bias(dtype).unsqueeze(0)
            if mask is not None:
                bias = bias + mask.to(device=table.device, dtype=dtype).unsqueeze(1)
            bias = bias.contiguous()
            self._bias_cache = (table.detach().clone(), mask, dtype, bias)
        return bias

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, nW, N, C] windows → [B, nW, N, C]."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).view(b, nw, n, 3, self.heads, c // self.heads).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv.unbind(0)  # each [B, nW, heads, N, d] (views)
        bias = self.attn_bias(mask, q.dtype)
        if bias.shape[0] == 1 or b == 1:  # windows as the batch: q/k/v stay views, the mask broadcasts or fits
            q, k, v = (t.reshape(b * nw, self.heads, n, -1) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias).view(b, nw, self.heads, n, -1)
        else:  # a batch of shifted windows: fold the windows into the heads so the mask broadcasts over B
            q, k, v = (t.reshape(b, nw * self.heads, n, -1) for t in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.reshape(1, nw * self.heads, n, n))
            out = out.view(b, nw, self.heads, n, -1)
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class SwinBlock(nn.Module):
    def __init__(self, dim: int, heads: int, window: int, res: int, shift: int, mlp_ratio: float) -> None:
        super().__init__()
        self.res, self.window, self.shift = res, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.register_buffer("mask", shift_mask(res, window, shift) if shift else None, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, c = x.shape
        r, w, s = self.res, self.window, self.shift
        h = self.norm1(x).view(b, r, r, c)
        if s:
            h = torch.roll(h, (-s, -s), (1, 2))
        h = h.view(b, r // w, w, r // w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, -1, w * w, c)
        h = self.attn(h, self.mask)
        h = h.view(b, r // w, r // w, w, w, c).permute(0, 1, 3, 2, 4, 5).reshape(b, r, r, c)
        if s:
            h = torch.roll(h, (s, s), (1, 2))
        x = x + h.reshape(b, l, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int, res: int) -> None:
        super().__init__()
        self.res = res
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, c = x.shape
        x = x.view(b, self.res, self.res, c)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.reduction(self.norm(x.view(b, -1, 4 * c)))


class Stage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, res: int, mlp_ratio: float,
                 downsample: bool) -> None:
        super().__init__()
        shift = window // 2 if res > window else 0
        self.blocks = nn.ModuleList(
            SwinBlock(dim, heads, window, res, shift if j % 2 else 0, mlp_ratio) for j in range(depth))
        self.downsample = PatchMerging(dim, res) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.downsample(x) if self.downsample is not None else x


class PatchEmbed(nn.Module):
    def __init__(self, in_chans: int, dim: int, patch: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class SwinTransformer(nn.Module):
    """Swin encoder returning ``[B, 1 + grid², C]``: the mean token followed by the final tokens (after LayerNorm)."""

    def __init__(self, cfg: SwinConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.in_chans, cfg.embed_dim, cfg.patch)
        res = cfg.image_size // cfg.patch
        n = len(cfg.depths)
        if res % (cfg.window * 2 ** (n - 1)):
            raise ValueError(f"image size {cfg.image_size} does not fit window {cfg.window} over {n} stages")
        self.layers = nn.ModuleList()
        for i, (depth, heads) in enumerate(zip(cfg.depths, cfg.heads)):
            self.layers.append(Stage(cfg.embed_dim * 2 ** i, depth, heads, cfg.window, res >> i, cfg.mlp_ratio,
                                     downsample=i < n - 1))
        self.norm = nn.LayerNorm(cfg.out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x)
        x = self.norm(x)
        return torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)
