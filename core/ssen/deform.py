"""Modulated deformable convolution (DCNv2) with two interchangeable backends.

``deform_conv2d(x, offset, mask, weight, bias, ...)`` follows the tensor layout of
``torchvision.ops.deform_conv2d``:

* ``offset``: ``[B, 2 * G * kh * kw, Ho, Wo]`` — for offset group ``g`` and kernel tap ``k = i * kw + j`` the
  channels ``g * 2K + 2k`` (dy) and ``g * 2K + 2k + 1`` (dx);
* ``mask``: ``[B, G * kh * kw, Ho, Wo]`` — channel ``g * K + k``.

Backends: ``"torchvision"`` (the compiled op) and ``"grid_sample"`` (bilinear ``grid_sample`` of every kernel tap,
then one contraction with the weight). ``"auto"`` picks ``grid_sample`` on CPU (several times faster there,
especially backward) and torchvision elsewhere. Both treat samples outside the image as zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BACKENDS = ("auto", "torchvision", "grid_sample")


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _grid_sample_dcn(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor,
                     bias: torch.Tensor | None, stride: tuple[int, int], padding: tuple[int, int],
                     dilation: tuple[int, int]) -> torch.Tensor:
    b, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    k = kh * kw
    ho, wo = offset.shape[-2:]
    groups = offset.shape[1] // (2 * k)
    if c != cw or c % groups:
        raise ValueError(f"deform_conv2d: input has {c} channels, weight expects {cw} in {groups} offset groups")
    dev = x.device
    # positions and sampling in float32 for reduced precision (bf16 cannot address pixels beyond 256 exactly)
    dtype = torch.float32 if x.dtype in (torch.float16, torch.bfloat16) else x.dtype
    # base sampling positions p0 + pk, in pixel units: [K, Ho, Wo]
    iy = torch.arange(ho, device=dev, dtype=dtype) * stride[0] - padding[0]
    ix = torch.arange(wo, device=dev, dtype=dtype) * stride[1] - padding[1]
    ky = (torch.arange(kh, device=dev, dtype=dtype) * dilation[0]).repeat_interleave(kw)
    kx = (torch.arange(kw, device=dev, dtype=dtype) * dilation[1]).repeat(kh)
    base_y = ky[:, None, None] + iy[None, :, None]
    base_x = kx[:, None, None] + ix[None, None, :]
    off = offset.to(dtype).view(b, groups, k, 2, ho, wo)
    py = base_y + off[:, :, :, 0]
    px = base_x + off[:, :, :, 1]
    # align_corners=False: pixel i has its centre at (2i + 1) / size - 1
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)  # [B, G, K, Ho, Wo, 2]
    grid = grid.view(b * groups, k * ho, wo, 2)
    xs = x.reshape(b * groups, c // groups, h, w).to(dtype)
    sampled = F.grid_sample(xs, grid, mode="bilinear", padding_mode="zeros", align_corners=False).to(x.dtype)
    sampled = sampled.view(b, groups, c // groups, k, ho, wo)
    if mask is not None:
        sampled = sampled * mask.view(b, groups, 1, k, ho, wo)
    wt = weight.view(o, groups, c // groups, k)
    out = torch.einsum("bgckhw,ogck->bohw", sampled, wt)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


def resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"unknown deformable-conv backend {backend!r}; choose one of {BACKENDS}")
    if backend == "auto":
        return "grid_sample" if device.type == "cpu" else "torchvision"
    return backend


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None, weight: torch.Tensor,
                  bias: torch.Tensor | None = None, stride: int | tuple[int, int] = 1,
                  padding: int | tuple[int, int] = 0, dilation: int | tuple[int, int] = 1,
                  backend: str = "auto") -> torch.Tensor:
    """Modulated deformable convolution; see the module docstring for layouts and backends."""
    stride, padding, dilation = _pair(stride), _pair(padding), _pair(dilation)
    if resolve_backend(backend, x.device) == "torchvision":
        from torchvision.ops import deform_conv2d as tv_deform_conv2d

        return tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding, dilation=dilation,
                                mask=mask)
    return _grid_sample_dcn(x, offset, mask, weight, bias, stride, padding, dilation)


class ModulatedDeformConv2d(nn.Module):
    """A 3×3 (by default) modulated deformable convolution whose offsets and mask are given at call time.

    Initialised as the identity map (centre tap = identity matrix, other taps zero) so that, with zero offsets
    and a mask near one, the aligned reference features start as the reference features themselves.
    """

    def __init__(self, channels: int, kernel_size: int = 3, backend: str = "auto") -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.backend = backend
        self.weight = nn.Parameter(torch.zeros(channels, channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(channels))
        with torch.no_grad():
            c = kernel_size // 2
            self.weight[:, :, c, c] = torch.eye(channels)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return deform_conv2d(x, offset, mask, self.weight, self.bias, padding=self.kernel_size // 2,
                             backend=self.backend)
