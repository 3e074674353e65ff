"""SeeSR (cswry/SeeSR): SD-2-base UNet + ControlNet with image cross-attention (RCA) on stock diffusers, the
LR-embedding start point, a tiled ControlNet+UNet sampler, the official resize rules and the full pipeline."""

from __future__ import annotations

from .load import (
                       SeeSRPair,
                       load_seesr_descriptors,
                       load_seesr_pair,
                       build_controlnet,
                       build_unet,
                       find_parts,
                       load_seesr,
                       read_config,
)
from .pipeline import (
                       ADDED_PROMPT,
                       NEGATIVE_PROMPT,
                       UpscaleOptions,
                       build_prompts,
                       upscale,
)
from .rca import RCAAttachment, attach_rca, rca_of
from .resize import SizePlan, condition_image, plan_sizes, to_final
from .sampler import SD2_LATENT_SCALE, SamplerOptions, predict_noise, sample
from .schedule import SCHEDULER_NAMES, lr_embedding, make_scheduler
from .tiles import gaussian_weights, tile_origins

__all__ = [
                       "ADDED_PROMPT",
                       "NEGATIVE_PROMPT",
                       "SCHEDULER_NAMES",
                       "SD2_LATENT_SCALE",
                       "RCAAttachment",
                       "SamplerOptions",
                       "SizePlan",
                       "UpscaleOptions",
                       "attach_rca",
                       "build_controlnet",
                       "build_prompts",
                       "build_unet",
                       "condition_image",
                       "find_parts",
                       "gaussian_weights",
                       "load_seesr",
                       "load_seesr_descriptors",
                       "load_seesr_pair",
                       "SeeSRPair",
                       "lr_embedding",
                       "make_scheduler",
                       "plan_sizes",
                       "predict_noise",
                       "rca_of",
                       "read_config",
                       "sample",
                       "tile_origins",
                       "to_final",
                       "upscale",
]
