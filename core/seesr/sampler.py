"""SeeSR's denoising loop: ControlNet + UNet with RCA, CFG, LR-embedding start, latent tiling, any scheduler.

Everything here works on *scaled* latents (``z · 0.18215``, what the UNet sees). ComfyUI LATENTs are unscaled; the
node layer converts with :data:`SD2_LATENT_SCALE`.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, replace

import torch

from ..errors import ContextMismatchError, InputError
from ..image import check_finite, match_batch
from ..progress import Progress
from ..tiling import retry_on_oom
from .layout import IMAGE_CONTEXT_DIM as IMAGE_CROSS_ATTENTION_DIM
from .schedule import LR_START_T, lr_embedding, make_scheduler
from .tiles import DEFAULT_OVERLAP, DEFAULT_TILE, blend_latent_tiles, latent_grid

SD2_LATENT_SCALE = 0.18215
MIN_TILE = 32  # the out-of-memory back-off stops at latent tiles of this side


@dataclass(frozen=True)
class SamplerOptions:
    """Sampling settings; defaults are the official ones except the tile overlap (see the SeeSR section of the README)."""

    steps: int = 50
    cfg: float = 5.5
    control_scale: float = 1.0
    scheduler: str = "ddpm"
    start: str = "lr"            # "lr": LR latent noised to t=999; "noise": pure noise
    tile_size: int | None = DEFAULT_TILE       # latent pixels; None/0 disables tiling
    tile_overlap: int = DEFAULT_OVERLAP
    tile_batch: int = 2          # tiles per network call (each tile carries its CFG pair)

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise InputError(f"steps must be >= 1, got {self.steps}")
        if self.start not in ("lr", "noise"):
            raise InputError(f"start must be 'lr' or 'noise', got {self.start!r}")
        if (self.tile_size or 0) < 0 or self.tile_overlap < 0:
            raise InputError(f"tile size {self.tile_size} and overlap {self.tile_overlap} must not be negative "
                             "(the overlap is clamped to half the tile actually used)")
        if self.tile_batch < 1:
            raise InputError(f"tile_batch must be >= 1, got {self.tile_batch}")


@dataclass(frozen=True)
class Conditioning:
    """Per-call conditioning, already batched for CFG as [negative…, positive…]."""

    text: torch.Tensor    # [2B, 77, D]
    image: torch.Tensor   # [2B, N, 512]
    cond: torch.Tensor    # [2B, 3, 8h, 8w] in [0,1]


def match_token_lengths(*states: torch.Tensor) -> list[torch.Tensor]:
    """Make text states of different token counts (ComfyUI encodes long prompts as several 77-token chunks) the
    same length by repeating each to the least common multiple, as ComfyUI's samplers do."""
    lens = [int(s.shape[1]) for s in states]
    target = math.lcm(*lens)
    return [s.repeat(1, target // n, 1) if n != target else s for s, n in zip(states, lens)]


def check_image_embeds(image_embeds: torch.Tensor) -> None:
    """DAPE embeddings must be ``[B, N, 512]`` (RAM's image_proj width, what SeeSR's RCA layers read) and finite."""
    if not isinstance(image_embeds, torch.Tensor) or image_embeds.ndim != 3 \
            or image_embeds.shape[-1] != IMAGE_CROSS_ATTENTION_DIM:
        got = tuple(image_embeds.shape) if isinstance(image_embeds, torch.Tensor) else type(image_embeds).__name__
        raise ContextMismatchError(f"the DAPE embeddings must be [B, N, {IMAGE_CROSS_ATTENTION_DIM}] (RAM image "
                                   f"embeddings, from 'DAPE / RAM Tag Image'); got {got}")
    check_finite(image_embeds, "DAPE embeddings")


def build_conditioning(positive: torch.Tensor, negative: torch.Tensor, image_embeds: torch.Tensor,
                       cond_image: torch.Tensor, batch: int, cfg: bool) -> Conditioning:
    """Stack the CFG batch: text [neg, pos], DAPE embeddings duplicated (not zeroed), condition image duplicated."""
    check_image_embeds(image_embeds)
    pos = match_batch(positive, batch, "positive conditioning")
    img = match_batch(image_embeds, batch, "DAPE embeddings")
    cimg = match_batch(cond_image, batch, "condition image")
    if not cfg:
        return Conditioning(pos, img, cimg)
    neg = match_batch(negative, batch, "negative conditioning")
    neg, pos = match_token_lengths(neg, pos)
    if neg.shape[1:] != pos.shape[1:]:
        raise InputError(f"negative conditioning {tuple(neg.shape)} and positive {tuple(pos.shape)} differ in shape")
    return Conditioning(torch.cat([neg, pos]), torch.cat([img, img]), torch.cat([cimg, cimg]))


def _net(unet, controlnet, x: torch.Tensor, t, c: Conditioning, scale: float) -> torch.Tensor:
    dtype = next(unet.parameters()).dtype
    x = x.to(dtype)
    text, img = c.text.to(dtype), c.image.to(dtype)
    down, mid = controlnet(x, t, encoder_hidden_states=text, controlnet_cond=c.cond.to(dtype),
                           conditioning_scale=scale, return_dict=False, image_encoder_hidden_states=img)
    out = unet(x, t, encoder_hidden_states=text, down_block_additional_residuals=down,
               mid_block_additional_residual=mid, return_dict=False, image_encoder_hidden_states=img)[0]
    return out.float()


def predict_noise(unet, controlnet, x: torch.Tensor, t, c: Conditioning, opts: SamplerOptions) -> torch.Tensor:
    """Noise prediction for the (CFG-doubled) ``x``; tiled + Gaussian-blended when the latent exceeds one tile."""
    h, w = x.shape[-2:]
    g = latent_grid(h, w, opts.tile_size or 0, opts.tile_overlap)
    if g.whole:
        return _net(unet, controlnet, x, t, c, opts.control_scale)
    s, n = g.th, x.shape[0]

    def run(group: list[tuple[int, int]]) -> list[torch.Tensor]:
        k = len(group)
        xt = torch.cat([x[..., y:y + s, xx:xx + s] for y, xx in group])
        ct = torch.cat([c.cond[..., 8 * y:8 * (y + s), 8 * xx:8 * (xx + s)] for y, xx in group])
        out = _net(unet, controlnet, xt, t, Conditioning(c.text.repeat(k, 1, 1), c.image.repeat(k, 1, 1), ct),
                   opts.control_scale)
        return [out[j * n:(j + 1) * n] for j in range(k)]

    return blend_latent_tiles(run, g, x.device, opts.tile_batch)[0]


def _step_kwargs(scheduler, generator: torch.Generator | None) -> dict:
    params = inspect.signature(scheduler.step).parameters
    return {"generator": generator} if "generator" in params else {}


def initial_latents(shape: tuple[int, ...], scheduler, generator: torch.Generator, start: str,
                    lr_latent: torch.Tensor | None, device: torch.device | str = "cpu") -> torch.Tensor:
    """The start point: ``randn`` from ``generator`` (drawn first, as the official pipeline does), then either the
    LR embedding (``lr_latent`` noised to t=999) or the noise scaled by ``init_noise_sigma``."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float32, device=generator.device).to(device)
    if start == "noise":
        return noise * scheduler.init_noise_sigma
    if lr_latent is None:
        raise InputError("start='lr' needs the LR latent")
    return lr_embedding(match_batch(lr_latent.float().to(device), shape[0], "LR latent"), noise, scheduler, LR_START_T)


def sample(unet, controlnet, *, lr_latent: torch.Tensor | None, cond_image: torch.Tensor, positive: torch.Tensor,
           negative: torch.Tensor, image_embeds: torch.Tensor, generator: torch.Generator,
           opts: SamplerOptions = SamplerOptions(), latent_shape: tuple[int, ...] | None = None,
           progress: Progress | None = None) -> torch.Tensor:
    """Run the SeeSR loop; returns the final *scaled* latent ``[B,4,h,w]`` (float32).

    ``lr_latent``: scaled LR latent ``[B|1,4,h,w]`` (for ``start='lr'``; also gives the shape); ``cond_image``:
    ``[B|1,3,8h,8w]`` in [0,1]; ``positive``/``negative``: text states ``[B|1,77,D]``; ``image_embeds``: DAPE
    ``[B|1,N,512]``.
    """
    if not isinstance(generator, torch.Generator):
        raise InputError("sample() needs a seeded torch.Generator")
    check_finite(cond_image, "condition image")
    check_finite(lr_latent, "LR latent")
    device = next(unet.parameters()).device
    if latent_shape is None:
        if lr_latent is None:
            raise InputError("give lr_latent or latent_shape")
        latent_shape = tuple(lr_latent.shape)
    b, _, h, w = latent_shape
    if tuple(cond_image.shape[-2:]) != (8 * h, 8 * w):
        raise InputError(f"condition image {tuple(cond_image.shape[-2:])} must be 8× the latent {(h, w)}")
    scheduler = make_scheduler(opts.scheduler)
    scheduler.set_timesteps(opts.steps, device=device)
    do_cfg = opts.cfg > 1.0
    cond = build_conditioning(positive.to(device), negative.to(device), image_embeds.to(device),
                              cond_image.to(device), b, do_cfg)
    start_state = generator.get_state()

    def run(tile: int | None) -> torch.Tensor:
        generator.set_state(start_state)  # a retry with smaller tiles restarts from the same noise
        o = replace(opts, tile_size=tile)
        scheduler.set_timesteps(o.steps, device=device)
        latents = initial_latents(tuple(latent_shape), scheduler, generator, o.start, lr_latent, device)
        kwargs = _step_kwargs(scheduler, generator)
        timesteps = scheduler.timesteps
        with torch.inference_mode():
            for i, t in enumerate(timesteps):
                x = torch.cat([latents, latents]) if do_cfg else latents
                x = scheduler.scale_model_input(x, t)
                eps = predict_noise(unet, controlnet, x, t, cond, o)
                if do_cfg:
                    u, c = eps.chunk(2)
                    eps = u + o.cfg * (c - u)
                latents = scheduler.step(eps, t, latents, return_dict=False, **kwargs)[0]
                if progress is not None:
                    progress(i + 1, len(timesteps))
        return latents

    # out of memory: halve the latent tile (down to MIN_TILE) and run again from the start
    return retry_on_oom(run, opts.tile_size, max(h, w), MIN_TILE, what="latent tiles")
