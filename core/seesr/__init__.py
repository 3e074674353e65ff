"""SeeSR (cswry/SeeSR): SD-2-base UNet + ControlNet with image cross-attention (RCA). One RCA implementation
(:mod:`.rca`) serves the library/CLI path on stock diffusers and ComfyUI's native path (:func:`load_native_parts`,
:mod:`.layout`); plus the LR-embedding start point, the tiled sampler, the official resize rules and the pipeline."""

from __future__ import annotations

from .build import build_controlnet, build_unet
from .layout import RCAEntry, RCASpec, rca_entries
from .load import (
    NativeParts,
    find_parts,
    load_native_parts,
    load_seesr,
    load_seesr_descriptors,
    read_config,
)
from .pipeline import (
    ADDED_PROMPT,
    NEGATIVE_PROMPT,
    UpscaleOptions,
    build_prompts,
    upscale,
)
from .rca import RCAAttachment, RCABlock, RCASet, attach_rca, rca_of, sdpa_attention
from .resize import SizePlan, condition_image, plan_sizes, to_final
from .sampler import SD2_LATENT_SCALE, SamplerOptions, predict_noise, sample
from .schedule import SCHEDULER_NAMES, lr_embedding, make_scheduler
from .tiles import blend_latent_tiles, gaussian_weights, latent_grid, tile_origins

__all__ = [
    "ADDED_PROMPT",
    "NEGATIVE_PROMPT",
    "SCHEDULER_NAMES",
    "SD2_LATENT_SCALE",
    "NativeParts",
    "RCAAttachment",
    "RCABlock",
    "RCAEntry",
    "RCASet",
    "RCASpec",
    "SamplerOptions",
    "SizePlan",
    "UpscaleOptions",
    "attach_rca",
    "blend_latent_tiles",
    "build_controlnet",
    "build_prompts",
    "build_unet",
    "condition_image",
    "find_parts",
    "gaussian_weights",
    "latent_grid",
    "load_native_parts",
    "load_seesr",
    "load_seesr_descriptors",
    "lr_embedding",
    "make_scheduler",
    "plan_sizes",
    "predict_noise",
    "rca_entries",
    "rca_of",
    "read_config",
    "sample",
    "sdpa_attention",
    "tile_origins",
    "to_final",
    "upscale",
]
