"""Universal restoration: DA-CLIP embeddings condition the IR-SDE network, which reverses the SDE from the
degraded image.

Randomness: image ``b`` of a batch uses its own ``torch.Generator`` (on the CPU) seeded with ``seed + b``, which
draws, at the full image size, first the start noise and then one noise field per step. A batch therefore gives
exactly the results of running its images one at a time with seeds ``seed, seed + 1, ...``, and CPU and GPU
runs consume the same noise.

Large images (``tile`` set and the image larger than one tile), two modes (``tile_mode``):

* ``exact`` (default): :func:`.lowmem.forward_lowmem` evaluates the network stage by stage, local operations tile
  by tile with halos, LinearAttention with global sums, the deepest level whole — the result does not depend on
  the tile (measured ≤ 1.7e-5 max abs per evaluation, 3.5e-7 mean abs per restored image, fp32) and the peak
  memory is bounded by the tile plus a few full-size maps (0.45× the whole-image peak at 1024² for universal-ir).
  ``tile_overlap`` has no effect. It is also this mode's out-of-memory fallback, ``tile`` unset included: a
  whole-image evaluation that runs out of memory continues with the low-memory one, halving its tile down to 16 px
  — never with the approximate per-tile network of ``tiles``.
* ``tiles``: the whole network on overlapping tiles, blended at every step (:func:`..tiling.tiled_apply`) — the
  older, approximate mode: every GroupNorm, LinearAttention and the deepest self-attention see one tile, which
  changes each evaluation by 15–53 % relative L2 (96×80 and 256² test images). Kept because it is the faster
  one on a GPU with little memory.

The SDE state and the noise are always global. An image that fits in one tile is processed whole.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ..daclip import encode_images
from ..errors import ContextMismatchError, InputError
from ..image import check_finite, checked_inputs, match_batch, merge_alpha, split_alpha
from ..progress import Progress
from ..tiling import retry_on_oom, tiled_apply
from .lowmem import MIN_TILE as LOWMEM_MIN_TILE
from .lowmem import forward_lowmem
from .sde import IRSDE
from .unet import ConditionalUNet

log = logging.getLogger(__name__)

SAMPLERS = ("posterior", "sde")
TILE_MODES = ("exact", "tiles")
MIN_TILE = {"exact": LOWMEM_MIN_TILE, "tiles": 32}
DEFAULT_STEPS = 100
PAIRS = {512: ("universal-ir.pth", "daclip_ViT-B-32.pt"), 768: ("wild-ir.pth", "wild-daclip_ViT-L-14.pt")}




def pairing_hint() -> str:
    return "; ".join(f"{net} ↔ {clip} ({dim}-wide)" for dim, (net, clip) in PAIRS.items())


def check_context(network: ConditionalUNet, width: int) -> None:
    """Raise :class:`ContextMismatchError` when the embedding width ``width`` does not fit ``network``."""
    want = network.config.context_dim
    if want > 0 and width != want:
        raise ContextMismatchError(
            f"The DA-CLIP embeddings are {width}-wide but this IR-SDE network ({network.variant}-ir) expects "
            f"{want}-wide embeddings. The models belong together in pairs: {pairing_hint()}. "
            f"Load the DA-CLIP model that matches the IR-SDE model.")


def embeddings(daclip: Any, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, degradation) ``[B or 1, D]`` float32 on the CPU from a DA-CLIP model or a DaclipEmbeds."""
    if daclip is None:
        raise InputError("IR-SDE restoration needs DA-CLIP embeddings: give a DA-CLIP model or DaclipEmbeds")
    if hasattr(daclip, "clean") and hasattr(daclip, "degradation"):
        clean, degra = daclip.clean, daclip.degradation
    elif hasattr(daclip, "encode_image"):
        emb = encode_images(daclip, images.float())
        clean, degra = emb.clean, emb.degradation
    else:
        raise InputError(f"expected a DA-CLIP model or DaclipEmbeds, got {type(daclip).__name__}")
    clean, degra = clean.detach().float().cpu(), degra.detach().float().cpu()
    if clean.ndim == 1:
        clean, degra = clean[None], degra[None]
    return clean, degra


def _seed(seed: int, index: int) -> int:
    return (int(seed) + index) % (2 ** 64)


def restore_one(network: ConditionalUNet, sde: IRSDE, lq: torch.Tensor, clean: torch.Tensor, degra: torch.Tensor,
                generator: torch.Generator, sampler: str = "posterior", tile: int | None = None,
                tile_overlap: int = 32, step_done: Progress | None = None, tile_mode: str = "exact") -> torch.Tensor:
    """Run the full reverse process for one image ``lq`` ``[1,3,H,W]``; returns the final state (unclamped)."""
    param = next(network.parameters())
    device, dtype = param.device, param.dtype
    shape = lq.shape
    full = max(shape[-2:])

    def noise() -> torch.Tensor:
        return torch.randn(shape, generator=generator, dtype=torch.float32).to(device)

    mu = lq.float().to(device)
    mu_net = mu.to(dtype)
    text = degra.to(device=device, dtype=dtype)
    image = clean.to(device=device, dtype=dtype)
    x = sde.start_state(mu, noise())
    steps = sde.timesteps()
    memo: dict = {}  # the tile that fitted, kept across steps after an out-of-memory back-off
    for k, t in enumerate(steps):
        def predict(xm: torch.Tensor, t: int = t) -> torch.Tensor:
            xt, m = xm[:, :3].to(dtype), xm[:, 3:].to(dtype)
            return network(xt, m, t, text_context=text, image_context=image).float()

        with torch.no_grad():
            if tile_mode == "exact":
                # the whole image at once while it fits in the tile (or no tile is set), else the exact low-memory
                # evaluation; an out-of-memory (the whole image included) halves the low-memory tile, which does not
                # change the result — never the approximate per-tile network of "tiles" mode
                def exact(tl: int | None, t: int = t) -> torch.Tensor:
                    if not tl or tl >= full:
                        return network(x.to(dtype), mu_net, t, text_context=text, image_context=image).float()
                    return forward_lowmem(network, x.to(dtype), mu_net, t, text, image, tile=tl).float()

                eps = retry_on_oom(exact, tile, full, MIN_TILE["exact"], what="exact low-memory tiles", memo=memo)
            else:
                eps = tiled_apply(predict, torch.cat([x, mu], dim=1), tile, tile_overlap, memo=memo)
        x = sde.step(sampler, x, eps, t, mu, noise())
        if step_done is not None:
            step_done(k + 1, len(steps))
    return x


def restore(network: ConditionalUNet, daclip: Any, images: torch.Tensor, steps: int = DEFAULT_STEPS,
            sampler: str = "posterior", seed: int = 0, tile: int | None = None, progress: Progress | None = None,
            tile_overlap: int = 32, sde: IRSDE | None = None, tile_mode: str = "exact") -> torch.Tensor:
    """Restore ``images`` ``[B,3,H,W]`` in [0,1] (a 4th alpha channel passes through); returns the same
    layout, float32 in [0,1], on the images' device.

    ``daclip`` is a DA-CLIP model (``encode_image(pixels, control=True)``) or a DaclipEmbeds (``.clean``,
    ``.degradation``). ``steps`` must be the SDE's ``T`` (100): the networks were trained on that schedule.
    """
    sde = sde or IRSDE()
    if steps != sde.T:
        raise InputError(f"IR-SDE restoration runs all {sde.T} steps of the schedule the networks were trained "
                         f"with; steps={steps} is not supported")
    if sampler not in SAMPLERS:
        raise InputError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if tile_mode not in TILE_MODES:
        raise InputError(f"unknown tile mode {tile_mode!r}; choose one of {TILE_MODES}")
    if tile is not None and tile and tile < MIN_TILE[tile_mode]:
        raise InputError(f"tile must be at least {MIN_TILE[tile_mode]} pixels in '{tile_mode}' mode (or 0/None for "
                         f"no tiling), got {tile}")
    if daclip is None:
        raise InputError("IR-SDE restoration needs DA-CLIP conditioning: connect a DA-CLIP model ('daclip_model', "
                         "it embeds the images) or DA-CLIP embeddings ('daclip_embeds', from 'DA-CLIP Encode'). "
                         f"Pairs: {pairing_hint()}.")
    rgb, alpha = split_alpha(images)
    check_finite(rgb, "image to restore")
    batch = rgb.shape[0]
    width = getattr(getattr(daclip, "config", None), "embed_dim", None)
    if isinstance(width, int):
        check_context(network, width)  # before spending time on the DA-CLIP encode
    with checked_inputs():  # DA-CLIP's encoder does not check the images again
        clean, degra = embeddings(daclip, rgb)
    check_finite(clean, "clean DA-CLIP embedding")
    check_finite(degra, "degradation DA-CLIP embedding")
    check_context(network, int(clean.shape[-1]))
    if network.config.use_degra_context:
        check_context(network, int(degra.shape[-1]))
    clean = match_batch(clean, batch, "clean DA-CLIP embedding", expand=False)
    degra = match_batch(degra, batch, "degradation DA-CLIP embedding", expand=False)

    total = batch * sde.T
    outs = []
    for b in range(batch):
        generator = torch.Generator(device="cpu").manual_seed(_seed(seed, b))

        def step_done(done: int, _n: int, b: int = b) -> None:
            if progress is not None:
                progress(b * sde.T + done, total)

        c, d = (e[b:b + 1] if e.shape[0] > 1 else e for e in (clean, degra))
        out = restore_one(network, sde, rgb[b:b + 1], c, d, generator, sampler, tile or None, tile_overlap,
                          step_done, tile_mode)
        outs.append(out.clamp(0, 1).to(images.device))
    return merge_alpha(torch.cat(outs, dim=0), alpha)
