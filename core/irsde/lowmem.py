"""Exact low-memory evaluation of the IR-SDE network (:class:`.unet.ConditionalUNet`) on large images.

``forward_lowmem(network, xt, mu, t, text_context, image_context, tile=256)`` returns the same noise estimate as
``network(xt, mu, t, text_context, image_context)``, up to the order of floating-point summation (about 1e-6 in
float32), while the working set is a few full-resolution feature maps plus one tile instead of every activation
of the network at once. Unlike per-tile evaluation of the whole network (:func:`..tiling.tiled_apply`), nothing in
the result depends on ``tile``.

How: the U-Net is evaluated over the whole image, stage by stage.

* Local operations (the 7x7 input conv, ResBlocks = two 3x3 convs + a 1x1 residual, the stride-2 4x4
  downsampling convs, nearest-x2 + 3x3 upsampling convs, the channel LayerNorms, the output conv) are computed on
  tiles. Each tile asks its inputs for exactly the window its receptive field needs, clipped to the image, and
  zero-pads only where that window leaves the image, so every conv sees the same zero padding as the
  whole-image forward and each output pixel gets the same value. Chains of local operations are fused: a tile of
  a ResBlock output pulls the wider window it needs from the ResBlock before it, and so on, down to the nearest
  stored map.
* ``LinearAttention`` (softmax of k over all positions, k·v sums over all positions) runs in two passes: while its
  input map is being stored, the per-head softmax statistics of k (running maximum, rescaled exponential sums)
  and the k·v context are accumulated tile by tile; then the per-pixel output ``q · context`` is written over the
  stored input in place.
* The deepest level (the ``SpatialTransformer`` with its GroupNorm and full self-attention, the middle blocks and
  the first up level) runs on the whole lowest-resolution map (1/8 of the side for universal-ir, 1/16 for
  wild-ir) with the network's own modules; only the transformer's per-token parts (cross-attention with the
  single image token, the GEGLU feed-forward) are chunked over tokens.
* The input is reflect-padded to a multiple of ``2 ** depth`` first and the output cropped, as in the forward.

Stored at full resolution: the 6-channel padded input (the input conv's ``nf``-channel output is recomputed
from it where it is needed, at the start and in the last ResBlock), and at the U-Net's first level (full
resolution for universal-ir, half for wild-ir; ``nf`` channels, the compute dtype) the two skips and the up-path
map: three maps, each freed as soon as it has been consumed, plus the output. Levels below hold the same at 1/4,
1/16, ... of the pixels. Lower levels use the tile side divided by their downscale factor (at least
:data:`MIN_TILE`).

``LowMemNetwork(network, tile)`` wraps a network so that code which calls ``network(xt, mu, t, ...)`` (such as
:func:`.restore.restore` with ``tile=None``) evaluates it this way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..image import pad_to_multiple
from ..progress import Progress
from .unet import ConditionalUNet, LinearAttention, ResBlock, UNetConfig

DEFAULT_TILE = 256
MIN_TILE = 16


# --------------------------------------------------------------------------------------------- regions
@dataclass(frozen=True)
class _Box:
    """Half-open pixel box ``[y0, y1) x [x0, x1)`` at one resolution."""

    y0: int
    y1: int
    x0: int
    x1: int

    def grow(self, top: int, bottom: int | None = None, left: int | None = None,
             right: int | None = None) -> _Box:
        bottom = top if bottom is None else bottom
        left = top if left is None else left
        right = left if right is None else right
        return _Box(self.y0 - top, self.y1 + bottom, self.x0 - left, self.x1 + right)

    def clip(self, h: int, w: int) -> _Box:
        return _Box(max(self.y0, 0), min(self.y1, h), max(self.x0, 0), min(self.x1, w))


class _Patch:
    """A tensor holding the values of a map (size ``h x w``) over ``box`` (a box inside the map)."""

    def __init__(self, data: torch.Tensor, box: _Box, h: int, w: int) -> None:
        self.data, self.box, self.h, self.w = data, box, h, w

    def get(self, want: _Box) -> torch.Tensor:
        """Values over ``want``, zero where ``want`` leaves the map. ``want`` clipped to the map must lie in
        ``self.box``."""
        have = want.clip(self.h, self.w)
        b = self.box
        if not (b.y0 <= have.y0 and have.y1 <= b.y1 and b.x0 <= have.x0 and have.x1 <= b.x1):
            raise AssertionError(f"patch {b} does not cover {have}")
        t = self.data[..., have.y0 - b.y0:have.y1 - b.y0, have.x0 - b.x0:have.x1 - b.x0]
        pad = (have.x0 - want.x0, want.x1 - have.x1, have.y0 - want.y0, want.y1 - have.y1)
        return F.pad(t, pad) if any(pad) else t


def _conv(patch: _Patch, conv: nn.Conv2d, out: _Box) -> torch.Tensor:
    """A stride-1 ``conv`` (zero padding ``p``, same size) over ``out`` from a patch of its input."""
    p = int(conv.padding[0])
    return F.conv2d(patch.get(out.grow(p)), conv.weight, conv.bias)


def _resblock(block: ResBlock, ss: tuple[torch.Tensor, torch.Tensor], x: _Patch, out: _Box) -> torch.Tensor:
    """``ResBlock`` over ``out`` from a patch of its input covering ``out`` grown by 2 (clipped to the map)."""
    scale, shift = ss
    mid = out.grow(1).clip(x.h, x.w)
    h = F.silu(_conv(x, block.block1.proj, mid) * (scale + 1) + shift)
    h = F.silu(_conv(_Patch(h, mid, x.h, x.w), block.block2.proj, out))
    return h + block.res_conv(x.get(out))


# --------------------------------------------------------------------------------------------- nodes
class _Node:
    """A feature map ``[B, C, h, w]`` that can produce any box of itself."""

    h: int
    w: int

    def crop(self, box: _Box) -> torch.Tensor:
        raise NotImplementedError

    def patch(self, want: _Box) -> _Patch:
        """A patch covering ``want`` clipped to the map."""
        have = want.clip(self.h, self.w)
        return _Patch(self.crop(have), have, self.h, self.w)


class _Stored(_Node):
    def __init__(self, data: torch.Tensor) -> None:
        self.data = data
        self.h, self.w = data.shape[-2:]

    def crop(self, box: _Box) -> torch.Tensor:
        return self.data[..., box.y0:box.y1, box.x0:box.x1]


class _Cat(_Node):
    def __init__(self, *parts: _Node) -> None:
        self.parts = parts
        self.h, self.w = parts[0].h, parts[0].w

    def crop(self, box: _Box) -> torch.Tensor:
        return torch.cat([p.crop(box) for p in self.parts], dim=1)


class _Conv(_Node):
    """Stride-1 conv with 'same' zero padding (3x3, 7x7, ...)."""

    def __init__(self, conv: nn.Conv2d, src: _Node) -> None:
        self.conv, self.src = conv, src
        self.p = int(conv.padding[0])
        self.h, self.w = src.h, src.w

    def crop(self, box: _Box) -> torch.Tensor:
        return _conv(self.src.patch(box.grow(self.p)), self.conv, box)


class _Down(_Node):
    """Conv 4x4, stride 2, zero padding 1: output pixel ``o`` reads input pixels ``2o-1 .. 2o+2``."""

    def __init__(self, conv: nn.Conv2d, src: _Node) -> None:
        self.conv, self.src = conv, src
        self.h, self.w = src.h // 2, src.w // 2

    def crop(self, box: _Box) -> torch.Tensor:
        want = _Box(2 * box.y0 - 1, 2 * box.y1 + 1, 2 * box.x0 - 1, 2 * box.x1 + 1)
        x = self.src.patch(want).get(want)
        return F.conv2d(x, self.conv.weight, self.conv.bias, stride=2)


class _Up(_Node):
    """Nearest x2 upsampling followed by a 3x3 conv (zero padding 1 on the upsampled map)."""

    def __init__(self, seq: nn.Sequential, src: _Node) -> None:
        self.conv, self.src = seq[1], src
        self.h, self.w = src.h * 2, src.w * 2

    def crop(self, box: _Box) -> torch.Tensor:
        up = box.grow(1)  # the upsampled window the conv reads (may leave the map: zeros there)
        low = _Box(up.y0 // 2, (up.y1 - 1) // 2 + 1, up.x0 // 2, (up.x1 - 1) // 2 + 1)
        x = self.src.patch(low).get(low)  # zeros outside the map stay zeros after upsampling
        x = x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)
        oy, ox = up.y0 - 2 * low.y0, up.x0 - 2 * low.x0
        x = x[..., oy:oy + up.y1 - up.y0, ox:ox + up.x1 - up.x0]
        return F.conv2d(x, self.conv.weight, self.conv.bias)


class _Res(_Node):
    """A ``ResBlock`` applied to the channel concatenation of ``srcs``."""

    def __init__(self, block: ResBlock, temb: torch.Tensor, *srcs: _Node) -> None:
        self.block = block
        self.src = srcs[0] if len(srcs) == 1 else _Cat(*srcs)
        self.h, self.w = self.src.h, self.src.w
        scale, shift = block.mlp(temb)[:, :, None, None].chunk(2, dim=1)
        self.ss = (scale, shift)

    def crop(self, box: _Box) -> torch.Tensor:
        return _resblock(self.block, self.ss, self.src.patch(box.grow(2)), box)


class _LinearAttention:
    """``Residual(PreNorm(LinearAttention))`` in two passes: :meth:`observe` the whole input tile by tile, then
    :meth:`apply` per pixel (exact: the only non-local quantities are k's softmax statistics and the k·v sums)."""

    def __init__(self, module: nn.Module) -> None:
        self.norm = module.fn.norm
        la: LinearAttention = module.fn.fn
        self.la = la
        hidden = la.to_qkv.weight.shape[0] // 3
        w = la.to_qkv.weight
        self.wq, self.wkv = w[:hidden], w[hidden:]
        self.hidden = hidden
        self.m = self.s = self.acc = None
        self.n = 0
        self.ctx: torch.Tensor | None = None

    def observe(self, x: torch.Tensor) -> None:
        b = x.shape[0]
        heads = self.la.heads
        kv = F.conv2d(self.norm(x), self.wkv).reshape(b, 2, heads, self.hidden // heads, -1)
        # the statistics accumulate over many tiles: keep them in float32 (at least) whatever the compute dtype
        acc = torch.promote_types(kv.dtype, torch.float32)
        k, v = kv[:, 0].to(acc), kv[:, 1].to(acc)  # [B, heads, d, n]
        m_tile = k.amax(dim=-1, keepdim=True)
        if self.m is None:
            m = m_tile
            ek = (k - m).exp()
            self.s = ek.sum(dim=-1, keepdim=True)
            self.acc = torch.einsum("bhdn,bhen->bhde", ek, v)
        else:
            m = torch.maximum(self.m, m_tile)
            rescale = (self.m - m).exp()
            ek = (k - m).exp()
            self.s = self.s * rescale + ek.sum(dim=-1, keepdim=True)
            self.acc = self.acc * rescale + torch.einsum("bhdn,bhen->bhde", ek, v)
        self.m = m
        self.n += k.shape[-1]

    def finish(self) -> None:
        self.ctx = (self.acc / self.s / self.n).to(self.wq.dtype)
        self.m = self.s = self.acc = None

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        heads = self.la.heads
        q = F.conv2d(self.norm(x), self.wq).reshape(b, heads, -1, h * w)
        q = q.softmax(dim=-2) * self.la.scale
        out = torch.einsum("bhde,bhdn->bhen", self.ctx, q).reshape(b, -1, h, w)
        return self.la.to_out(out) + x


# --------------------------------------------------------------------------------------------- driver
def _boxes(h: int, w: int, tile: int) -> list[_Box]:
    ny, nx = math.ceil(h / tile), math.ceil(w / tile)
    ys = [round(i * h / ny) for i in range(ny + 1)]
    xs = [round(i * w / nx) for i in range(nx + 1)]
    return [_Box(ys[i], ys[i + 1], xs[j], xs[j + 1]) for i in range(ny) for j in range(nx)]


class _Runner:
    def __init__(self, tile: int, dtype: torch.dtype, total: int, progress: Progress | None) -> None:
        self.tile, self.dtype, self.total, self.done, self.progress = tile, dtype, total, 0, progress

    def tick(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(min(self.done, self.total), self.total)

    def tile_at(self, factor: int) -> int:
        return max(self.tile // factor, MIN_TILE)

    def store(self, node: _Node, factor: int, observe: Callable[[torch.Tensor], None] | None = None) -> _Stored:
        """Compute ``node`` tile by tile into one tensor (``factor``: its downscale vs the padded input)."""
        out = None
        for box in _boxes(node.h, node.w, self.tile_at(factor)):
            part = node.crop(box)
            if out is None:
                out = part.new_empty((*part.shape[:2], node.h, node.w), dtype=self.dtype)
            out[..., box.y0:box.y1, box.x0:box.x1] = part
            if observe is not None:
                observe(part)
            del part
        self.tick()
        return _Stored(out)

    def attend_in_place(self, att: _LinearAttention, stored: _Stored, factor: int) -> _Stored:
        att.finish()
        for box in _boxes(stored.h, stored.w, self.tile_at(factor)):
            sl = (..., slice(box.y0, box.y1), slice(box.x0, box.x1))
            stored.data[sl] = att.apply(stored.data[sl])
        self.tick()
        return stored


def _spatial_transformer(module: nn.Module, x: torch.Tensor, ctx: torch.Tensor | None, chunk: int) -> torch.Tensor:
    """``Residual(PreNorm(SpatialTransformer))`` on a whole map, with the per-token parts chunked over tokens."""
    xn = module.fn.norm(x)
    st = module.fn.fn
    b, _, h, w = x.shape
    y = st.proj_in(st.norm(xn)).flatten(2).transpose(1, 2)
    for block in st.transformer_blocks:
        y = block.attn1(block.norm1(y)) + y
        if ctx is None:  # attn2 is self-attention then: not per token
            y = block.attn2(block.norm2(y), None) + y
        y = y.contiguous()
        for s in range(0, y.shape[1], chunk):
            yc = y[:, s:s + chunk]
            if ctx is not None:
                yc = block.attn2(block.norm2(yc), ctx) + yc
            y[:, s:s + chunk] = block.ff(block.norm3(yc)) + yc
    y = y.transpose(1, 2).reshape(b, -1, h, w)
    return st.proj_out(y) + xn + x


def _attend_whole(module: nn.Module, x: torch.Tensor, ctx: torch.Tensor | None, chunk: int) -> torch.Tensor:
    if isinstance(module.fn.fn, LinearAttention):
        return module(x, ctx)
    return _spatial_transformer(module, x, ctx, chunk)


def _up_node(op: nn.Module, src: _Node) -> _Node:
    return _Up(op, src) if isinstance(op, nn.Sequential) else _Conv(op, src)


def passes(network: ConditionalUNet) -> int:
    """How many progress ticks :func:`forward_lowmem` reports for ``network``."""
    return 5 * network.config.depth - 2


def forward_lowmem(network: ConditionalUNet, xt: torch.Tensor, mu: torch.Tensor, t: float | torch.Tensor,
                   text_context: torch.Tensor | None = None, image_context: torch.Tensor | None = None,
                   tile: int = DEFAULT_TILE, progress: Progress | None = None) -> torch.Tensor:
    """``network(xt, mu, t, text_context, image_context)`` computed stage by stage over the whole image with
    tiles of side ``tile`` (full-resolution pixels; any positive size, it only changes memory and speed, not
    the result). Inference only (runs under ``torch.no_grad``). ``progress(done, total)`` is called after each
    pass over the image (:func:`passes` in all)."""
    if tile is None or int(tile) < 1:
        raise InputError(f"tile must be a positive number of pixels, got {tile}")
    with torch.no_grad():
        return _forward(network, xt, mu, t, text_context, image_context, int(tile), progress)


def _forward(network: ConditionalUNet, xt: torch.Tensor, mu: torch.Tensor, t: float | torch.Tensor,
             text_context: torch.Tensor | None, image_context: torch.Tensor | None, tile: int,
             progress: Progress | None) -> torch.Tensor:
    c = network.config
    h0, w0 = xt.shape[-2:]
    dtype = xt.dtype
    run = _Runner(tile, dtype, passes(network), progress)

    inp, _ = pad_to_multiple(torch.cat([xt - mu, mu], dim=1), c.pad_multiple, "reflect")
    temb, ctx = network.conditioning(t, text_context, image_context, dtype, inp.device)

    # x_init (the input conv's output, nf channels) is needed again only at the very end: recompute it there
    # from the 6-channel input instead of storing it
    inp = _Stored(inp)
    x_init = _Conv(network.init_conv, inp)
    factor = 1
    x: _Node = x_init
    if c.scale == 0.5:
        x, factor = _Down(network.downsample, x_init), 2

    # ---- down path, every level but the deepest: b1 → skip; b2 → LinearAttention → skip; downsample
    skips: list[tuple[_Stored, _Stored]] = []
    for b1, b2, att, down in network.downs[:-1]:
        a = run.store(_Res(b1, temb, x), factor)
        la = _LinearAttention(att)
        y = run.store(_Res(b2, temb, a), factor, la.observe)
        y = run.attend_in_place(la, y, factor)
        skips.append((a, y))
        x, factor = _Down(down, y), factor * 2
        del a, y, la

    # ---- deepest level (whole map): downs[-1], middle, ups[0]
    chunk = max(run.tile_at(factor) ** 2, 1024)
    xd = run.store(x, factor).data
    del x
    b1, b2, att, down = network.downs[-1]
    sa = b1(xd, temb)
    del xd
    sb = _attend_whole(att, b2(sa, temb), ctx, chunk)
    xd = down(sb)
    xd = network.mid_block1(xd, temb)
    xd = _attend_whole(network.mid_attn, xd, ctx, chunk)
    xd = network.mid_block2(xd, temb)
    b1, b2, att, up = network.ups[0]
    xd = b1(torch.cat([xd, sb], dim=1), temb)
    del sb
    xd = b2(torch.cat([xd, sa], dim=1), temb)
    del sa
    xd = _attend_whole(att, xd, ctx, chunk)
    run.tick()
    x = _up_node(up, _Stored(xd))
    factor //= 2 if isinstance(up, nn.Sequential) else 1
    del xd

    # ---- up path: b1(cat x, skip_b) → b2(cat ·, skip_a) → LinearAttention → upsample (conv3x3 at level 0)
    for b1, b2, att, up in network.ups[1:]:
        sa, sb = skips.pop()
        la = _LinearAttention(att)
        z = run.store(_Res(b2, temb, _Res(b1, temb, x, sb), sa), factor, la.observe)
        del sa, sb, x
        z = run.attend_in_place(la, z, factor)
        x = _up_node(up, z)
        del z
        if isinstance(up, nn.Sequential):
            factor //= 2

    # ---- tail
    if c.scale == 0.5:
        x = _Up(network.upsample, x)
    out = run.store(_Conv(network.final_conv, _Res(network.final_res_block, temb, x, x_init)), 1)
    return out.data[..., :h0, :w0]


class LowMemNetwork(nn.Module):
    """A drop-in for ``network`` whose forward is :func:`forward_lowmem` with a fixed ``tile`` (parameters,
    ``config`` and ``variant`` are the wrapped network's), e.g. ``restore(LowMemNetwork(net, 256), ...)``."""

    def __init__(self, network: ConditionalUNet, tile: int = DEFAULT_TILE, progress: Progress | None = None) -> None:
        super().__init__()
        self.network = network
        self.config: UNetConfig = network.config
        self.variant: str = network.variant
        self.tile = int(tile)
        self.progress = progress

    def forward(self, xt: torch.Tensor, mu: torch.Tensor, t: float | torch.Tensor,
                text_context: torch.Tensor | None = None, image_context: torch.Tensor | None = None) -> torch.Tensor:
        return forward_lowmem(self.network, xt, mu, t, text_context, image_context, self.tile, self.progress)
