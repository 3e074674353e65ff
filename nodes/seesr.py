"""SeeSR nodes: loader, prompt builder, LR embedding (VAE encode of the resized LR image), sampler, and the whole
chain in one node. SD-2-base comes from ComfyUI's own CheckpointLoaderSimple (CLIP + VAE); text goes through core
CLIPTextEncode; LATENTs are ComfyUI's ``{"samples": unscaled latent}`` so core KSampler/VAEDecode accept them."""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..core.ram import DapeEmbeds, tag_images
from ..core.seesr import (
    ADDED_PROMPT,
    NEGATIVE_PROMPT,
    SCHEDULER_NAMES,
    SD2_LATENT_SCALE,
    SamplerOptions,
    UpscaleOptions,
    build_prompts,
    condition_image,
    load_seesr_pair,
    plan_sizes,
    sample,
)
from ..core.seesr import upscale as run_upscale
from ..core.seesr.pipeline import COLOR_FIXES
from ..core.seesr.sampler import match_token_lengths
from ..core.seesr.tiles import DEFAULT_OVERLAP, DEFAULT_TILE
from . import common
from .dape import DAPE_EMBEDS, DAPE_MODEL, tagger_payload

log = logging.getLogger(__name__)

SEESR_MODEL = io.Custom("SEESR_MODEL")
FOLDER = "seesr"
CATEGORY = f"{common.CATEGORY}/SeeSR"


def seesr_payload(value: object, latent_hw: tuple[int, int], tile: int | None,
                  batch: int = 1) -> tuple[common.ModelPayload, int]:
    """A checked SEESR_MODEL payload and the activation bytes of one tiled ControlNet+UNet call."""
    payload = common.expect_model(value, "seesr_model", "SEESR_MODEL", "Load SeeSR", "seesr")
    t = min(tile or max(latent_hw), *latent_hw)
    return payload, payload.descriptor.memory_for(batch * SamplerOptions().tile_batch, (t, t))


def _latent(latent: object) -> torch.Tensor:
    z = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(z, torch.Tensor) or z.ndim != 4 or z.shape[1] != 4:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"'latent' must be an SD LATENT {{'samples': [B,4,h,w]}} (SeeSR LR Embedding or "
                         f"VAEEncode); got {shape}")
    return z.float()


def _conditioning(cond: object, what: str) -> torch.Tensor:
    """The text states ``[B, T, D]`` of a core CLIPTextEncode CONDITIONING ``[[tensor, {...}], ...]``."""
    try:
        tensors = [c[0] for c in cond]
    except (TypeError, IndexError, KeyError):
        tensors = []
    if not tensors or not all(isinstance(t, torch.Tensor) and t.ndim == 3 for t in tensors):
        raise TypeError(f"'{what}' must be a CONDITIONING from CLIPTextEncode (SD-2 CLIP); got {type(cond).__name__}")
    if len(tensors) > 1:
        log.warning("SeeSR: %s has %d entries; only the first is used", what, len(tensors))
    return tensors[0].float()


def _embeds(dape: object) -> DapeEmbeds:
    return common.expect(dape, DapeEmbeds, "dape_embeds", "DAPE_EMBEDS", "DAPE / RAM Tag Image")


def _sampler_inputs() -> list:
    return [
        io.Int.Input("seed", default=0, min=0, max=2**63 - 1, control_after_generate=True,
                     tooltip="Seed of the torch.Generator for the start noise and every DDPM step."),
        io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Denoising steps (official: 50 with DDPM)."),
        io.Float.Input("cfg", default=5.5, min=0.0, max=30.0, step=0.1,
                       tooltip="Classifier-free guidance scale (official 5.5); ≤ 1 disables the negative pass."),
        io.Float.Input("control_scale", default=1.0, min=0.0, max=2.0, step=0.05,
                       tooltip="Scale of the ControlNet residuals (official 1.0)."),
        io.Combo.Input("scheduler", options=list(SCHEDULER_NAMES), default="ddpm",
                       tooltip="ddpm is the official sampler; ddim / dpmpp_2m / unipc / euler allow fewer steps."),
    ]


def _tile_inputs() -> list:
    return [
        io.Int.Input("tile_size", default=DEFAULT_TILE, min=0, max=512, step=8,
                     tooltip="Latent tile side (×8 pixels); 0 = never tile. Tiling starts when the latent has more "
                             "than tile² pixels. Official: 96."),
        io.Int.Input("tile_overlap", default=DEFAULT_OVERLAP, min=0, max=256, step=4,
                     tooltip="Tile overlap in latent pixels. Official: 4 (visible seams); default 32 blends them "
                             "away with the Gaussian weights."),
    ]


class SeeSRLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = common.model_dirs(FOLDER, ["unet", "controlnet"])
        return io.Schema(
            node_id="SeeSRLoader", display_name="Load SeeSR", category=CATEGORY,
            description="Loads the SeeSR release folder (unet/ + controlnet/, each config.json + "
                        "diffusion_pytorch_model.safetensors) from models/seesr: SD-2 UNet and ControlNet with "
                        "SeeSR's image cross-attention, on stock diffusers, strict load.",
            inputs=[
                io.Combo.Input("model_name", options=names, default=names[0] if names else None,
                               tooltip="Folder in models/seesr holding 'unet' and 'controlnet'."),
                io.Combo.Input("dtype", options=common.DTYPE_OPTIONS, default="auto", tooltip=common.DTYPE_TOOLTIP),
            ],
            outputs=[SEESR_MODEL.Output(display_name="seesr_model", tooltip="SeeSR UNet + ControlNet.")])

    @classmethod
    def execute(cls, model_name, dtype="auto") -> io.NodeOutput:
        folder = common.resolve_dir(FOLDER, model_name, "SeeSR")
        desc = load_seesr_pair(folder, dtype=common.widget_dtype(dtype, model_params=1_400_000_000))
        return io.NodeOutput(common.wrap(desc, model_name))


class SeeSRPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRPrompt", display_name="SeeSR Prompt", category=CATEGORY,
            description="Builds SeeSR's prompts: positive = '{tags}, {user prompt},' + added prompt; negative as "
                        "given. Feed both to core CLIPTextEncode with the SD-2 CLIP.",
            inputs=[
                io.String.Input("tags", default="", force_input=True,
                                tooltip="Tags of the LR image (DAPE Tagger 'tags' output)."),
                io.String.Input("user_prompt", default="", multiline=True, tooltip="Your own words (may be empty)."),
                io.String.Input("added_prompt", default=ADDED_PROMPT, tooltip="Appended quality words (official)."),
                io.String.Input("negative_prompt", default=NEGATIVE_PROMPT, multiline=True,
                                tooltip="Negative prompt (official default)."),
            ],
            outputs=[io.String.Output(display_name="positive", tooltip="Positive prompt text."),
                     io.String.Output(display_name="negative", tooltip="Negative prompt text.")])

    @classmethod
    def execute(cls, tags, user_prompt="", added_prompt=ADDED_PROMPT, negative_prompt=NEGATIVE_PROMPT):
        pos, neg = build_prompts(tags, user_prompt, added_prompt, negative_prompt)
        return io.NodeOutput(pos, neg, ui={"text": (pos,)})


class SeeSRLREmbedding(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRLREmbedding", display_name="SeeSR LR Embedding", category=CATEGORY,
            description="Resizes the LR image with SeeSR's rules (pre-scale tiny inputs, ×upscale bicubic, multiple "
                        "of 8) and VAE-encodes it: the clean LR latent SeeSR starts from (noised to t=999 in the "
                        "sampler) and the condition image for the ControlNet.",
            inputs=[
                io.Vae.Input("vae", tooltip="SD-2-base VAE (CheckpointLoaderSimple)."),
                io.Image.Input("image", tooltip="Low-resolution image(s); alpha is dropped."),
                io.Int.Input("upscale", default=4, min=1, max=8, tooltip="Scale factor (official 4)."),
                io.Int.Input("process_size", default=512, min=64, max=4096, step=8,
                             tooltip="Inputs whose short side is below process_size/upscale are pre-scaled up."),
            ],
            outputs=[io.Latent.Output(display_name="lr_latent",
                                      tooltip="ComfyUI LATENT of the resized LR image (unscaled, like VAEEncode)."),
                     io.Image.Output(display_name="condition_image",
                                     tooltip="The resized LR image (ControlNet condition and colour reference).")])

    @classmethod
    def execute(cls, vae, image, upscale=4, process_size=512) -> io.NodeOutput:
        rgb, _ = common.image_to_bchw(image)
        plan = plan_sizes(rgb.shape[-1], rgb.shape[-2], upscale, process_size)
        cond = condition_image(rgb, plan)
        latent = vae.encode(common.bchw_to_image(cond))
        return io.NodeOutput({"samples": latent}, common.bchw_to_image(cond))


class SeeSRSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRSampler", display_name="SeeSR Sampler", category=CATEGORY,
            description="SeeSR's denoising loop: ControlNet on the condition image + UNet, both reading the DAPE "
                        "embeddings, CFG over [negative, positive], latent tiling with Gaussian blending.",
            inputs=[
                SEESR_MODEL.Input("seesr_model", tooltip="From Load SeeSR."),
                io.Conditioning.Input("positive", tooltip="CLIPTextEncode (SD-2 CLIP) of the positive prompt."),
                io.Conditioning.Input("negative", tooltip="CLIPTextEncode (SD-2 CLIP) of the negative prompt."),
                DAPE_EMBEDS.Input("dape_embeds", tooltip="DAPE Tagger embeddings of the LR image."),
                io.Image.Input("condition_image", tooltip="SeeSR LR Embedding 'condition_image' (8× the latent)."),
                io.Latent.Input("latent", tooltip="SeeSR LR Embedding 'lr_latent' (also gives the output size)."),
                *_sampler_inputs(),
                io.Combo.Input("start", options=["lr", "noise"], default="lr",
                               tooltip="lr: LR latent noised to t=999 (official); noise: pure noise."),
                *_tile_inputs(),
            ],
            outputs=[io.Latent.Output(display_name="latent", tooltip="Denoised LATENT (decode with core VAEDecode).")])

    @classmethod
    def execute(cls, seesr_model, positive, negative, dape_embeds, condition_image, latent, seed=0, steps=50,
                cfg=5.5, control_scale=1.0, scheduler="ddpm", start="lr", tile_size=DEFAULT_TILE,
                tile_overlap=DEFAULT_OVERLAP) -> io.NodeOutput:
        common.expect_model(seesr_model, "seesr_model", "SEESR_MODEL", "Load SeeSR", "seesr")
        z = _latent(latent) * SD2_LATENT_SCALE
        pos, neg = _conditioning(positive, "positive"), _conditioning(negative, "negative")
        emb = _embeds(dape_embeds)
        cond, _ = common.image_to_bchw(condition_image)
        opts = SamplerOptions(steps=steps, cfg=cfg, control_scale=control_scale, scheduler=scheduler, start=start,
                              tile_size=tile_size or None, tile_overlap=tile_overlap)
        (pair,) = common.load_models(seesr_payload(seesr_model, tuple(z.shape[-2:]), opts.tile_size))
        out = sample(pair.unet, pair.controlnet, lr_latent=z, cond_image=cond, positive=pos, negative=neg,
                     image_embeds=emb.embeds, opts=opts, progress=common.progress_callback(steps),
                     generator=torch.Generator().manual_seed(int(seed)))
        return io.NodeOutput({"samples": (out / SD2_LATENT_SCALE).cpu()})


class SeeSRUpscale(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRUpscale", display_name="SeeSR Upscale", category=CATEGORY,
            description="The whole SeeSR chain in one node: DAPE tags + embeddings, prompts, SeeSR resize rules, "
                        "VAE encode, tiled sampling, VAE decode, colour fix, resize to exactly ×upscale.",
            inputs=[
                SEESR_MODEL.Input("seesr_model", tooltip="From Load SeeSR."),
                DAPE_MODEL.Input("dape_model", tooltip="From Load DAPE / RAM Tagger (with DAPE.pth merged)."),
                io.Clip.Input("clip", tooltip="SD-2-base CLIP (CheckpointLoaderSimple)."),
                io.Vae.Input("vae", tooltip="SD-2-base VAE (CheckpointLoaderSimple)."),
                io.Image.Input("image", tooltip="Low-resolution image(s)."),
                io.Int.Input("upscale", default=4, min=1, max=8, tooltip="Scale factor (official 4)."),
                io.Int.Input("process_size", default=512, min=64, max=4096, step=8,
                             tooltip="Inputs whose short side is below process_size/upscale are pre-scaled up."),
                io.String.Input("user_prompt", default="", multiline=True, tooltip="Added after the tags."),
                *_sampler_inputs(),
                io.Combo.Input("color_fix", options=list(COLOR_FIXES), default="adain",
                               tooltip="Colour correction towards the upscaled LR image (official default adain)."),
                *_tile_inputs(),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The super-resolved image(s), ×upscale.")])

    @classmethod
    def execute(cls, seesr_model, dape_model, clip, vae, image, upscale=4, process_size=512, user_prompt="",
                seed=0, steps=50, cfg=5.5, control_scale=1.0, scheduler="ddpm", color_fix="adain",
                tile_size=DEFAULT_TILE, tile_overlap=DEFAULT_OVERLAP) -> io.NodeOutput:
        rgb, alpha = common.image_to_bchw(image)
        opts = SamplerOptions(steps=steps, cfg=cfg, control_scale=control_scale, scheduler=scheduler,
                              tile_size=tile_size or None, tile_overlap=tile_overlap)
        plan = plan_sizes(rgb.shape[-1], rgb.shape[-2], upscale, process_size)
        pair, tagger = common.load_models(seesr_payload(seesr_model, plan.latent_hw, opts.tile_size),
                                          tagger_payload(dape_model, rgb.shape[0]))
        embeds = tag_images(tagger, rgb)

        def encode_text(texts):
            return torch.cat(match_token_lengths(*[clip.encode_from_tokens(clip.tokenize(t)).float() for t in texts]))

        progress = common.progress_callback(steps * rgb.shape[0])

        out = run_upscale(rgb, pair.unet, pair.controlnet, encode_text=encode_text,
                          vae_encode=lambda x: vae.encode(common.bchw_to_image(x)),
                          vae_decode=lambda z: common.image_to_bchw(vae.decode(z))[0],
                          seed=seed, dape_embeds=embeds, progress=progress,
                          options=UpscaleOptions(upscale=upscale, process_size=process_size,
                                                 user_prompt=user_prompt, color_fix=color_fix, sampler=opts))
        return io.NodeOutput(common.bchw_to_image(out, alpha))


NODES = [SeeSRLoader, SeeSRPrompt, SeeSRLREmbedding, SeeSRSampler, SeeSRUpscale]
