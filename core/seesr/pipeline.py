"""The whole SeeSR ×N pipeline (``test_seesr.py`` order), independent of where the SD2 parts come from.

Text encoding and the VAE are passed as callables so the same code drives diffusers components (CLI) and
any other CLIP/VAE implementation (the native ComfyUI path does not use this module: see nodes/seesr_native.py):

* ``encode_text(list[str]) -> [B, 77, D]`` text states;
* ``vae_encode([B,3,H,W] in [0,1]) -> [B,4,H/8,W/8]`` *unscaled* latent (what ComfyUI's VAEEncode gives);
* ``vae_decode(unscaled latent) -> [B,3,H,W]`` in [0,1];
* ``dape([B,3,H,W] in [0,1]) -> DapeEmbeds`` (tags + [B,145,512]) — or pass ``dape_embeds`` precomputed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ..colorfix import METHOD_NAMES, color_fix
from ..errors import InputError
from ..image import check_finite, checked_inputs, merge_alpha, split_alpha
from ..ram.embeds import DapeEmbeds
from .resize import condition_image, plan_sizes, to_final
from .sampler import (
    SD2_LATENT_SCALE,
    Progress,
    SamplerOptions,
    match_token_lengths,
    sample,
)

ADDED_PROMPT = "clean, high-resolution, 8k"
NEGATIVE_PROMPT = "dotted, noise, blur, lowres, smooth"
COLOR_FIXES = ("adain", *(m for m in METHOD_NAMES if m != "adain"))  # adain first: the official default

TextEncoder = Callable[[Sequence[str]], torch.Tensor]
VaeFn = Callable[[torch.Tensor], torch.Tensor]


def build_prompts(tags: str, user_prompt: str = "", added_prompt: str = ADDED_PROMPT,
                  negative: str = NEGATIVE_PROMPT) -> tuple[str, str]:
    """The official prompt pair: ``f"{tags}, {user_prompt}," + added_prompt`` and the negative prompt."""
    return f"{tags}, {user_prompt}," + added_prompt, negative


@dataclass(frozen=True)
class UpscaleOptions:
    upscale: int = 4
    process_size: int = 512
    user_prompt: str = ""
    added_prompt: str = ADDED_PROMPT
    negative_prompt: str = NEGATIVE_PROMPT
    color_fix: str = "adain"   # test_seesr.py --align_method default
    sampler: SamplerOptions = field(default_factory=SamplerOptions)


def upscale(image: torch.Tensor, unet, controlnet, *, encode_text: TextEncoder, vae_encode: VaeFn, vae_decode: VaeFn,
            seed: int = 0, dape: Callable[[torch.Tensor], DapeEmbeds] | None = None,
            dape_embeds: DapeEmbeds | None = None, options: UpscaleOptions = UpscaleOptions(),
            progress: Progress | None = None) -> torch.Tensor:
    """LR ``[B,C,H,W]`` in [0,1] (RGB; gray is used as RGB, an alpha channel is upscaled bilinearly and
    re-attached) → SR ``[B,C,H·up,W·up]`` in [0,1]; each image gets its own tags/prompt.

    Images are processed one at a time (each may need its own prompt); the generator is seeded once with ``seed``.
    """
    image, alpha = split_alpha(image)  # layout, empty batch and channel checks
    check_finite(image, "image to upscale")
    if dape_embeds is None:
        if dape is None:
            raise InputError("give a DAPE tagger (dape=) or precomputed dape_embeds")
    else:
        check_finite(getattr(dape_embeds, "embeds", None), "DAPE embeddings")
    with checked_inputs():  # the nested entries (tagger, resize, sampler, colour fix) do not check them again
        if dape_embeds is None:
            dape_embeds = dape(image)
        if len(dape_embeds) not in (1, image.shape[0]):
            raise InputError(f"{len(dape_embeds)} DAPE embeddings for {image.shape[0]} images; give one for all "
                             "images or one per image")
        plan = plan_sizes(image.shape[-1], image.shape[-2], options.upscale, options.process_size)
        generator = torch.Generator(device="cpu").manual_seed(int(seed))
        steps = options.sampler.steps
        total = steps * image.shape[0]
        outs = []
        for i in range(image.shape[0]):
            emb = dape_embeds.select(i if len(dape_embeds) > 1 else 0)
            tags = emb.tags[0] if emb.tags else ""
            pos_text, neg_text = build_prompts(tags, options.user_prompt, options.added_prompt,
                                               options.negative_prompt)
            neg, pos = match_token_lengths(encode_text([neg_text]).float(), encode_text([pos_text]).float())
            cond = condition_image(image[i:i + 1].float(), plan)
            lr_latent = vae_encode(cond).float() * SD2_LATENT_SCALE
            step_progress = None if progress is None else (lambda d, t, i=i: progress(i * steps + d, total))
            z = sample(unet, controlnet, lr_latent=lr_latent, cond_image=cond, positive=pos, negative=neg,
                       image_embeds=emb.embeds, generator=generator, opts=options.sampler, progress=step_progress)
            sr = vae_decode(z / SD2_LATENT_SCALE).float().cpu().clamp(0, 1)
            sr = color_fix(sr, cond.cpu(), options.color_fix, clamp=True)
            outs.append(to_final(sr, plan).clamp(0, 1))
    return merge_alpha(torch.cat(outs), alpha)
