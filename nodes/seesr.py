"""SeeSR nodes: prompt builder and LR embedding (VAE encode of the resized LR image) here; the native model nodes
(Load SeeSR, SeeSR Apply, SeeSR Tiled Sampling) in :mod:`.seesr_native`. SD-2 comes from ComfyUI's own
CheckpointLoaderSimple (MODEL + CLIP + VAE); text goes through core CLIPTextEncode; sampling is core KSampler /
SamplerCustomAdvanced; LATENTs are ComfyUI's ``{"samples": unscaled latent}``."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.seesr import (
    ADDED_PROMPT,
    NEGATIVE_PROMPT,
    build_prompts,
    condition_image,
    plan_sizes,
)
from . import common
from .seesr_native import (
    CATEGORY,
    SEESR_MODEL,
    SeeSRApply,
    SeeSRLoader,
    SeeSRTiledSampling,
)

__all__ = ["NODES", "SEESR_MODEL", "SeeSRApply", "SeeSRLREmbedding", "SeeSRLoader", "SeeSRPrompt",
           "SeeSRTiledSampling"]


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
                        "of 8) and VAE-encodes it: the clean LR latent SeeSR starts from (core KSampler with denoise "
                        "1.0 noises it to the first sigma: SeeSR's LR embedding) and the condition image for the "
                        "ControlNet (SeeSR Apply 'image').",
            inputs=[
                io.Vae.Input("vae", tooltip="SD-2-base VAE (CheckpointLoaderSimple)."),
                io.Image.Input("image", tooltip="Low-resolution image(s); alpha is dropped."),
                io.Int.Input("upscale", default=4, min=1, max=8, tooltip="Scale factor (official 4)."),
                io.Int.Input("process_size", default=512, min=64, max=4096, step=8,
                             tooltip="Inputs whose short side is below process_size/upscale are pre-scaled up."),
            ],
            outputs=[io.Latent.Output(display_name="lr_latent",
                                      tooltip="ComfyUI LATENT of the resized LR image (unscaled, like VAEEncode): "
                                              "KSampler 'latent_image' with denoise 1.0."),
                     io.Image.Output(display_name="condition_image",
                                     tooltip="The resized LR image (ControlNet condition and colour reference).")])

    @classmethod
    def execute(cls, vae, image, upscale=4, process_size=512) -> io.NodeOutput:
        rgb, _ = common.image_to_bchw(image)
        plan = plan_sizes(rgb.shape[-1], rgb.shape[-2], upscale, process_size)
        cond = condition_image(rgb, plan)
        latent = vae.encode(common.bchw_to_image(cond))
        return io.NodeOutput({"samples": latent}, common.bchw_to_image(cond))


NODES = [SeeSRLoader, SeeSRPrompt, SeeSRLREmbedding, SeeSRApply, SeeSRTiledSampling]
