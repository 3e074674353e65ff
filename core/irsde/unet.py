"""The IR-SDE noise-prediction network of DA-CLIP (``ConditionalUNet``), written from the published facts.

Module and parameter names follow the official checkpoints (``universal-ir.pth``, ``wild-ir.pth``) so their
state dicts load with ``strict=True``. Every hyper-parameter is inferred from tensor shapes by
:func:`infer_config`. Attention over pixels uses :func:`torch.nn.functional.scaled_dot_product_attention`
(memory-efficient kernels instead of a materialised ``N x N`` matrix).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..image import pad_to_multiple
from ..shapes import count_blocks

HEAD_CHANNELS = 32  # the official code fixes 32 channels per attention head
LINEAR_ATTN_HEADS = 4


@dataclass(frozen=True)
class UNetConfig:
    """Hyper-parameters of a ConditionalUNet (all inferred from a state dict)."""

    in_nc: int = 3
    out_nc: int = 3
    nf: int = 64
    ch_mult: tuple[int, ...] = (1, 2, 4, 8)
    context_dim: int = 512
    use_degra_context: bool = True
    use_image_context: bool = True
    scale: float = 1.0  # 0.5: the wild variant (U-Net body at half resolution)

    @property
    def variant(self) -> str:
        return "wild" if self.scale == 0.5 else "universal"

    @property
    def depth(self) -> int:
        return len(self.ch_mult)

    @property
    def pad_multiple(self) -> int:
        return 2 ** self.depth


# --------------------------------------------------------------------------------------------- blocks
class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis with a gain only (key ``g``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.g = nn.Parameter(torch.ones(1, dim, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The official code switches eps to 1e-3 for half-precision inputs. The released networks were trained in
        # float32 (eps 1e-5), and with 1e-3 one bf16 evaluation of the tiny test network moves by 15 % instead of
        # 1.2 %: statistics are computed in float32 with eps 1e-5 for every dtype (identical in float32).
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=1, unbiased=False, keepdim=True)
        return ((xf - mean) * (var + 1e-5).rsqrt()).to(x.dtype) * self.g


class PreNorm(nn.Module):
    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn
        self.norm = ChannelLayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(self.norm(x), context)


class Residual(nn.Module):
    def __init__(self, fn: nn.Module) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        return self.fn(x, context) + x


class ConvBlock(nn.Module):
    """conv3x3 (no bias) → optional ``h * (scale + 1) + shift`` → SiLU. Key: ``proj``."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, scale_shift: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.proj(x)
        if scale_shift is not None:
            scale, shift = scale_shift
            x = x * (scale + 1) + shift
        return F.silu(x)


class ResBlock(nn.Module):
    def __init__(self, dim_in: int, dim_out: int, time_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, dim_out * 2))
        self.block1 = ConvBlock(dim_in, dim_out)
        self.block2 = ConvBlock(dim_out, dim_out)
        self.res_conv = nn.Conv2d(dim_in, dim_out, 1, bias=False) if dim_in != dim_out else nn.Identity()

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        scale, shift = self.mlp(t)[:, :, None, None].chunk(2, dim=1)
        h = self.block1(x, (scale, shift))
        return self.block2(h) + self.res_conv(x)


class LinearAttention(nn.Module):
    """Linear attention (q softmaxed over channels, k over positions), 4 heads x 32."""

    def __init__(self, dim: int, heads: int = LINEAR_ATTN_HEADS, dim_head: int = HEAD_CHANNELS) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim_head ** -0.5
        hidden = heads * dim_head
        self.to_qkv = nn.Conv2d(dim, hidden * 3, 1, bias=False)
        self.to_out = nn.Sequential(nn.Conv2d(hidden, dim, 1), ChannelLayerNorm(dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        q, k, v = (t.reshape(b, self.heads, -1, h * w) for t in self.to_qkv(x).chunk(3, dim=1))
        q = q.softmax(dim=-2) * self.scale
        k = k.softmax(dim=-1)
        v = v / (h * w)
        ctx = torch.einsum("bhdn,bhen->bhde", k, v)
        out = torch.einsum("bhde,bhdn->bhen", ctx, q)
        return self.to_out(out.reshape(b, -1, h, w))


class Attention(nn.Module):
    """Multi-head attention with bias-free q/k/v and a biased output projection (``to_out.0``)."""

    def __init__(self, query_dim: int, context_dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.scale = dim_head ** -0.5
        self.to_q = nn.Linear(query_dim, inner, bias=False)
        self.to_k = nn.Linear(context_dim, inner, bias=False)
        self.to_v = nn.Linear(context_dim, inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, query_dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        ctx = x if context is None else context
        if ctx.shape[1] == 1:
            # One key: the softmax weight is exactly 1, so the output is the projected value for every query.
            return self.to_out(self.to_v(ctx)).expand(-1, x.shape[1], -1)
        b, n, _ = x.shape
        q, k, v = (t.reshape(b, t.shape[1], self.heads, -1).transpose(1, 2)
                   for t in (self.to_q(x), self.to_k(ctx), self.to_v(ctx)))
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


class GEGLU(nn.Module):
    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim_in, dim_out * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, dim * mult), nn.Dropout(0.0), nn.Linear(dim * mult, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, context_dim: int) -> None:
        super().__init__()
        self.attn1 = Attention(dim, dim, heads, dim_head)
        self.ff = FeedForward(dim)
        self.attn2 = Attention(dim, context_dim, heads, dim_head)
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), context) + x
        return self.ff(self.norm3(x)) + x


class GroupNorm(nn.GroupNorm):
    """``nn.GroupNorm`` that also accepts groups holding a single value (a 1x1 map with one channel per group, as
    tiny configurations reach on small images): the normalised value is then 0, so the output is the bias."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.shape[1] // self.num_groups) * x[0, 0].numel() == 1:
            return torch.zeros_like(x) + self.bias.view(1, -1, *([1] * (x.ndim - 2)))
        return super().forward(x)


class SpatialTransformer(nn.Module):
    """GroupNorm → 1x1 proj_in → one transformer block (self-, cross-attention, GEGLU) → 1x1 proj_out, residual."""

    def __init__(self, dim: int, context_dim: int) -> None:
        super().__init__()
        heads = dim // HEAD_CHANNELS
        inner = heads * HEAD_CHANNELS
        self.norm = GroupNorm(32, dim, eps=1e-6)
        self.proj_in = nn.Conv2d(dim, inner, 1)
        self.transformer_blocks = nn.ModuleList([TransformerBlock(inner, heads, HEAD_CHANNELS, context_dim)])
        self.proj_out = nn.Conv2d(inner, dim, 1)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        b, _, h, w = x.shape
        y = self.proj_in(self.norm(x))
        y = y.flatten(2).transpose(1, 2)  # row-major tokens
        for block in self.transformer_blocks:
            y = block(y, context)
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        return self.proj_out(y) + x


class SinusoidalTimeEmbedding(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        freqs = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        args = t.float()[:, None] * freqs[None, :]
        return torch.cat((args.sin(), args.cos()), dim=-1)


def _upsample(dim_in: int, dim_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(dim_in, dim_out, 3, padding=1))


def _downsample(dim_in: int, dim_out: int) -> nn.Conv2d:
    return nn.Conv2d(dim_in, dim_out, 4, 2, 1)


def _conv3(dim_in: int, dim_out: int) -> nn.Conv2d:
    return nn.Conv2d(dim_in, dim_out, 3, padding=1, bias=False)


# --------------------------------------------------------------------------------------------- network
class ConditionalUNet(nn.Module):
    """Predicts the noise of an IR-SDE state: ``forward(xt, mu, t, text_context, image_context) -> eps``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        c = self.config = config
        nf, time_dim = c.nf, c.nf * 4
        self.context_dim = c.context_dim
        self.init_conv = nn.Conv2d(c.in_nc * 2, nf, 7, padding=3, bias=False)
        if c.scale == 0.5:
            self.downsample = _downsample(nf, nf)
            self.upsample = _upsample(nf, nf)
        self.time_mlp = nn.Sequential(SinusoidalTimeEmbedding(nf), nn.Linear(nf, time_dim), nn.GELU(),
                                      nn.Linear(time_dim, time_dim))
        if c.use_degra_context:
            self.prompt = nn.Parameter(torch.zeros(1, time_dim))
            self.text_mlp = nn.Sequential(nn.Linear(c.context_dim, time_dim), nn.SiLU(),
                                          nn.Linear(time_dim, time_dim))
            self.prompt_mlp = nn.Linear(time_dim, time_dim)

        def attn(dim: int, deepest: bool) -> nn.Module:
            if c.use_image_context and deepest:
                return Residual(PreNorm(dim, SpatialTransformer(dim, c.context_dim)))
            return Residual(PreNorm(dim, LinearAttention(dim)))

        dims = [nf * m for m in (1, *c.ch_mult)]
        self.downs = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i in range(c.depth):
            d_in, d_out, last = dims[i], dims[i + 1], i == c.depth - 1
            self.downs.append(nn.ModuleList([
                ResBlock(d_in, d_in, time_dim), ResBlock(d_in, d_in, time_dim), attn(d_in, last),
                _conv3(d_in, d_out) if last else _downsample(d_in, d_out)]))
            self.ups.insert(0, nn.ModuleList([
                ResBlock(d_out + d_in, d_out, time_dim), ResBlock(d_out + d_in, d_out, time_dim), attn(d_out, last),
                _conv3(d_out, d_in) if i == 0 else _upsample(d_out, d_in)]))
        mid = dims[-1]
        self.mid_block1 = ResBlock(mid, mid, time_dim)
        self.mid_attn = attn(mid, True)
        self.mid_block2 = ResBlock(mid, mid, time_dim)
        self.final_res_block = ResBlock(nf * 2, nf, time_dim)
        self.final_conv = nn.Conv2d(nf, c.out_nc, 3, padding=1)

    @property
    def variant(self) -> str:
        return self.config.variant

    def _time(self, t: float | torch.Tensor, device: torch.device) -> torch.Tensor:
        if not isinstance(t, torch.Tensor):
            t = torch.tensor([float(t)])
        return t.reshape(-1).to(device=device, dtype=torch.float32)

    def conditioning(self, t: float | torch.Tensor, text_context: torch.Tensor | None,
                     image_context: torch.Tensor | None, dtype: torch.dtype, device: torch.device
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(time + degradation embedding ``[B, 4·nf]``, image context ``[B, 1, D]`` or None) in ``dtype``.

        The sinusoidal features are computed in float32; the MLPs run in the weights' dtype (bf16/fp16 too)."""
        c = self.config
        feats = self.time_mlp[0](self._time(t, device))
        temb = self.time_mlp[1:](feats.to(self.init_conv.weight.dtype)).to(dtype)
        if c.use_degra_context and text_context is not None:
            weights = torch.softmax(self.text_mlp(text_context.to(dtype)), dim=1)
            temb = temb + self.prompt_mlp(weights * self.prompt)
        ctx = image_context.to(dtype).unsqueeze(1) if c.use_image_context and image_context is not None else None
        return temb, ctx

    def forward(self, xt: torch.Tensor, mu: torch.Tensor, t: float | torch.Tensor,
                text_context: torch.Tensor | None = None, image_context: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        h0, w0 = xt.shape[-2:]
        x, _ = pad_to_multiple(torch.cat([xt - mu, mu], dim=1), c.pad_multiple, "reflect")
        x = self.init_conv(x)
        x_init = x
        if c.scale == 0.5:
            x = self.downsample(x)
        temb, ctx = self.conditioning(t, text_context, image_context, x.dtype, x.device)

        skips: list[torch.Tensor] = []
        for b1, b2, att, down in self.downs:
            x = b1(x, temb)
            skips.append(x)
            x = att(b2(x, temb), ctx)
            skips.append(x)
            x = down(x)

        x = self.mid_block2(self.mid_attn(self.mid_block1(x, temb), ctx), temb)

        for b1, b2, att, up in self.ups:
            x = b1(torch.cat([x, skips.pop()], dim=1), temb)
            x = b2(torch.cat([x, skips.pop()], dim=1), temb)
            x = up(att(x, ctx))

        if c.scale == 0.5:
            x = self.upsample(x)
        x = self.final_res_block(torch.cat([x, x_init], dim=1), temb)
        return self.final_conv(x)[..., :h0, :w0]


# --------------------------------------------------------------------------------------------- inference


def infer_config(sd: Mapping[str, torch.Tensor]) -> UNetConfig:
    """Read every hyper-parameter of a ConditionalUNet from tensor shapes."""
    try:
        init = sd["init_conv.weight"]
        nf = int(init.shape[0])
        levels = list(range(count_blocks(sd, "downs.", "U-Net levels")))
        if not levels:
            raise ConfigError("no U-Net levels ('downs.<i>.' keys)")
        ch_mult = []
        for i in levels:
            d_out = int(sd[f"downs.{i}.3.weight"].shape[0])
            if d_out % nf:
                raise ConfigError(f"level {i} has {d_out} channels, not a multiple of nf={nf}")
            ch_mult.append(d_out // nf)
        to_k = [v for k, v in sd.items() if k.endswith("attn2.to_k.weight")]
        use_image_context = bool(to_k)
        use_degra_context = "prompt" in sd
        if to_k:
            context_dim = int(to_k[0].shape[1])
        elif use_degra_context:
            context_dim = int(sd["text_mlp.0.weight"].shape[1])
        else:
            context_dim = -1
        return UNetConfig(in_nc=int(init.shape[1]) // 2, out_nc=int(sd["final_conv.weight"].shape[0]), nf=nf,
                          ch_mult=tuple(ch_mult), context_dim=context_dim, use_degra_context=use_degra_context,
                          use_image_context=use_image_context, scale=0.5 if "downsample.weight" in sd else 1.0)
    except KeyError as exc:
        raise ConfigError(f"the IR-SDE state dict lacks the tensor {exc}") from None


def build_irsde(config: UNetConfig, device: torch.device | str | None = None) -> ConditionalUNet:
    """An uninitialised network for ``config`` (``device="meta"`` allocates nothing)."""
    with torch.device(device or "cpu"):
        return ConditionalUNet(config)
