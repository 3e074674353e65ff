"""Schedulers (SD-2-base config shipped as package data) and SeeSR's LR-embedding start point."""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

from ..errors import InputError

LR_START_T = 999  # SeeSR noises the LR latent to t = 999 (not the first sampled timestep, 981)

SCHEDULERS: dict[str, tuple[type, dict[str, Any]]] = {
    "ddpm": (DDPMScheduler, {}),  # the official sampler
    "ddim": (DDIMScheduler, {}),
    "dpmpp_2m": (DPMSolverMultistepScheduler, {"algorithm_type": "dpmsolver++", "solver_order": 2}),
    "unipc": (UniPCMultistepScheduler, {}),
    "euler": (EulerDiscreteScheduler, {}),
}
SCHEDULER_NAMES = tuple(SCHEDULERS)


def sd2_scheduler_config() -> dict[str, Any]:
    """The SD-2-base ``scheduler/scheduler_config.json`` (a PNDM config; each scheduler reads what it knows)."""
    text = (resources.files(__package__) / "data" / "scheduler_config.json").read_text()
    return {k: v for k, v in json.loads(text).items() if k != "_note"}


def make_scheduler(name: str = "ddpm", config: dict[str, Any] | None = None):
    """A diffusers scheduler by name (``ddpm`` official; ``ddim``, ``dpmpp_2m``, ``unipc``, ``euler``)."""
    key = name.lower()
    if key not in SCHEDULERS:
        raise InputError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULER_NAMES)}")
    cls, extra = SCHEDULERS[key]
    return cls.from_config({**(config or sd2_scheduler_config()), **extra})


def lr_embedding(latent: torch.Tensor, noise: torch.Tensor, scheduler, t: int = LR_START_T) -> torch.Tensor:
    """SeeSR's start point: the (scaled) LR latent noised to ``t``: √ᾱ_t·z + √(1−ᾱ_t)·ε.

    ``scheduler`` supplies ``alphas_cumprod`` (any diffusers SD scheduler). ``latent`` may have batch 1 and be
    broadcast against ``noise``. Schedulers whose state is not variance-preserving (``init_noise_sigma`` ≠ 1, e.g.
    Euler) get the result scaled by ``init_noise_sigma`` (= 1/√ᾱ at the start), which is their own noising.
    """
    if latent.shape[1:] != noise.shape[1:]:
        raise InputError(f"LR latent {tuple(latent.shape)} and noise {tuple(noise.shape)} differ in shape")
    acp = scheduler.alphas_cumprod.to(torch.float32)
    if not 0 <= t < acp.numel():
        raise InputError(f"t must be in [0, {acp.numel() - 1}], got {t}")
    a = acp[t]
    x = a.sqrt() * latent.to(torch.float32) + (1 - a).sqrt() * noise.to(torch.float32)
    sigma0 = float(getattr(scheduler, "init_noise_sigma", 1.0))
    if sigma0 != 1.0:
        x = x * sigma0
    return x.to(noise.dtype)


def sigmas_from_alphas(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """The k-diffusion sigmas of a VP schedule, σ_t = √((1 − ᾱ_t)/ᾱ_t) (what ComfyUI's ModelSamplingDiscrete holds)."""
    acp = alphas_cumprod.to(torch.float64)
    return ((1 - acp) / acp).sqrt()


def ksampler_start(latent: torch.Tensor, noise: torch.Tensor, sigma: float, max_denoise: bool = True) -> torch.Tensor:
    """What the UNet sees first when a KSampler (denoise 1.0) starts from the *clean* latent ``z`` (scaled) at ``σ``:
    the sampler state is ``z + σ'·ε`` (``σ' = √(1+σ²)`` at σ_max, else ``σ``) and the UNet input is the state
    ``/ √(1+σ²)``. At σ_max that is ``√ᾱ·z + ε`` — SeeSR's noised-LR start ``√ᾱ·z + √(1−ᾱ)·ε`` with the noise
    ×1/√(1−ᾱ) (1.0023 at t = 999): the derivation in docs/seesr.md."""
    scale = math.sqrt(1 + sigma * sigma) if max_denoise else sigma
    return (latent.float() + scale * noise.float()) / math.sqrt(1 + sigma * sigma)
