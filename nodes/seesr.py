"""SeeSR nodes: prompts (SeeSR Text Encode: one batched CONDITIONING, row i from image i's tags; SeeSR Prompt: the
text of one prompt pair), the LR embedding (VAE encode of the resized LR image, and the official size plan) and the
final resize back to exactly ``upscale ×`` the input; the native model nodes (Load SeeSR, SeeSR Apply, SeeSR Tiled
Sampling) in :mod:`.seesr_native`. SD-2 comes from ComfyUI's own CheckpointLoaderSimple (MODEL + CLIP + VAE); text
goes through the SD-2 CLIP; sampling is core KSampler / SamplerCustomAdvanced; LATENTs are ComfyUI's
``{"samples": unscaled latent}``.

Batches: ComfyUI samples the whole LATENT batch in one KSampler run, and row i of a CONDITIONING tensor conditions
latent row i (a batch-1 tensor is broadcast). So a batch of B images needs ONE conditioning with B rows, not a
list of B prompts (a STRING output list would run the sampler once per prompt on the whole batch).
"""

from __future__ import annotations

import torch
from comfy_api.latest import io

from ..core.errors import InputError
from ..core.image import check_finite
from ..core.seesr import (
    ADDED_PROMPT,
    NEGATIVE_PROMPT,
    SizePlan,
    build_prompts,
    condition_image,
    plan_sizes,
    to_final,
)
from ..core.seesr.sampler import match_token_lengths
from . import common
from .dape import DAPE_EMB
from .seesr_native import (
    CATEGORY,
    SEESR_MODEL,
    SeeSRApply,
    SeeSRLoader,
    SeeSRTiledSampling,
)

__all__ = ["NODES", "SEESR_MODEL", "SEESR_SIZE", "SeeSRApply", "SeeSRFinalResize", "SeeSRLREmbedding", "SeeSRLoader",
           "SeeSRPrompt", "SeeSRTextEncode", "SeeSRTiledSampling", "encode_rows"]

SEESR_SIZE = io.Custom("SEESR_SIZE")
SIZE = common.PayloadSocket(SEESR_SIZE, "seesr_size", "SeeSR LR Embedding", SizePlan)


# ----------------------------------------------------------------------------------------------- text
def _encode_one(clip, text: str) -> tuple[torch.Tensor, dict]:
    """What core CLIPTextEncode gives for ``text``: ``(cond [1, 77·chunks, D], {"pooled_output": [1, D], ...})``."""
    out = clip.encode_from_tokens_scheduled(clip.tokenize(text))
    if len(out) != 1:
        raise InputError(f"the CLIP gives {len(out)} scheduled conditionings (CLIP hooks with keyframes); SeeSR Text "
                         "Encode needs one per prompt: remove the hook keyframes or encode each image separately")
    cond, extra = out[0]
    return cond, dict(extra)


def _stack_extra(extras: list[dict]) -> dict:
    """Per-row extras (``pooled_output`` …) as one dict: batch-1 tensors stacked, other values shared."""
    out = {}
    for key in dict.fromkeys(k for e in extras for k in e):
        values = [e.get(key) for e in extras]
        if all(isinstance(v, torch.Tensor) and v.shape[:1] == (1,) and v.shape == values[0].shape for v in values):
            out[key] = torch.cat(values)
        elif all(v is values[0] or (not isinstance(v, torch.Tensor) and v == values[0]) for v in values):
            out[key] = values[0]
        else:
            raise InputError(f"the CLIP's '{key}' output differs in shape or value between the prompts of the "
                             "batch; it cannot be stacked into one conditioning")
    return out


def encode_rows(clip, texts: list[str]) -> list:
    """One CONDITIONING whose row i is the encoding of ``texts[i]``: each text encoded as core CLIPTextEncode does
    (identical texts once), token counts made equal the way ComfyUI batches conditionings of different lengths
    (each row repeated to the least common multiple: attention over a repeated context gives the same result), rows
    stacked, ``pooled_output`` too."""
    encoded = {t: _encode_one(clip, t) for t in dict.fromkeys(texts)}
    rows = [encoded[t] for t in texts]
    conds = match_token_lengths(*[c for c, _ in rows])
    return [[torch.cat(conds), _stack_extra([e for _, e in rows])]]


def prompt_inputs(user_tooltip: str, negative_tooltip: str) -> list[io.Input]:
    """The words of SeeSR's prompt besides the tags: the user's, SeeSR's added quality words and the negative
    prompt (defaults: the official test script's)."""
    return [io.String.Input("user_prompt", default="", multiline=True, tooltip=user_tooltip),
            io.String.Input("added_prompt", default=ADDED_PROMPT, tooltip="Appended quality words (official)."),
            io.String.Input("negative_prompt", default=NEGATIVE_PROMPT, multiline=True, tooltip=negative_tooltip)]


class SeeSRTextEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRTextEncode",
            display_name="SeeSR Text Encode (per image)",
            category=CATEGORY,
            description="Encodes SeeSR's prompts for a whole batch at once: for image i, positive = '{tags i}, {user "
                        "prompt},' + added prompt (SeeSR's test script), encoded with the SD-2 CLIP as CLIP Text "
                        "Encode does; the rows are stacked into ONE conditioning whose row i conditions latent row "
                        "i (token chunks padded the way ComfyUI batches them). Negative: the same prompt for every "
                        "row. Use this, not SeeSR Prompt + CLIP Text Encode, for batches of more than one image.",
            inputs=[
                io.Clip.Input("clip", tooltip="SD-2 CLIP (Load Checkpoint)."),
                DAPE_EMB.input("DAPE Tagger 'dape_embeds': carries each image's tags."),
                *prompt_inputs("Your own words for every image (may be empty).",
                               "Negative prompt (official default), the same for every image."),
            ],
            outputs=[io.Conditioning.Output(display_name="positive",
                                            tooltip="One row per image (row i: image i's SeeSR prompt)."),
                     io.Conditioning.Output(display_name="negative",
                                            tooltip="The negative prompt, one row per image.")])

    @classmethod
    def execute(cls, clip, dape_embeds, user_prompt="", added_prompt=ADDED_PROMPT,
                negative_prompt=NEGATIVE_PROMPT) -> io.NodeOutput:
        if clip is None:
            raise InputError("the 'clip' input is empty: connect the SD-2 CLIP (Load Checkpoint 'CLIP')")
        emb = DAPE_EMB.check(dape_embeds)
        if not emb.tags:
            raise InputError("the 'dape_embeds' input carries no tags (it must come from 'DAPE / RAM Tag Image')")
        pairs = [build_prompts(t, user_prompt, added_prompt, negative_prompt) for t in emb.tags]
        positive = encode_rows(clip, [p for p, _ in pairs])
        negative = encode_rows(clip, [n for _, n in pairs])
        shown = [p for p, _ in pairs]
        if len(shown) > 1:
            shown = [f"{i + 1}: {p}" for i, p in enumerate(shown)]
        return io.NodeOutput(positive, negative, ui={"text": shown})


class SeeSRPrompt(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRPrompt",
            display_name="SeeSR Prompt",
            category=CATEGORY,
            description="Builds SeeSR's prompts: positive = '{tags}, {user prompt},' + added prompt; negative as "
                        "given. Feed both to core CLIPTextEncode with the SD-2 CLIP. For one image only: with a "
                        "batch the tags list would run the sampler once per image on the whole batch; use SeeSR "
                        "Text Encode (per image) for batches.",
            inputs=[
                io.String.Input("tags", default="", force_input=True,
                                tooltip="Tags of the LR image (DAPE Tagger 'tags' output)."),
                *prompt_inputs("Your own words (may be empty).", "Negative prompt (official default)."),
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
            node_id="SeeSRLREmbedding",
            display_name="SeeSR LR Embedding",
            category=CATEGORY,
            description="Resizes the LR image with SeeSR's rules (pre-scale tiny inputs, ×upscale bicubic, multiple "
                        "of 8) and VAE-encodes it: the clean LR latent SeeSR starts from (core KSampler with denoise "
                        "1.0 noises it to the first sigma: SeeSR's LR embedding) and the condition image for the "
                        "ControlNet (SeeSR Apply 'image'). 'seesr_size' carries the size plan: SeeSR Final Resize "
                        "brings the decoded image back to exactly upscale × the input, as SeeSR does.",
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
                                     tooltip="The resized LR image (ControlNet condition and colour reference)."),
                     SIZE.output("The size plan (input, processed and final size) for SeeSR Final Resize.")])

    @classmethod
    def execute(cls, vae, image, upscale=4, process_size=512) -> io.NodeOutput:
        rgb, _ = common.image_to_bchw(image)
        plan = plan_sizes(rgb.shape[-1], rgb.shape[-2], upscale, process_size)
        cond = condition_image(rgb, plan)
        latent = vae.encode(common.bchw_to_image(cond))
        return io.NodeOutput({"samples": latent}, common.bchw_to_image(cond), plan)


class SeeSRFinalResize(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRFinalResize",
            display_name="SeeSR Final Resize",
            category=CATEGORY,
            description="Resizes the decoded SeeSR result (processed size: a multiple of 8, tiny inputs pre-scaled) "
                        "to exactly upscale × the input size (bicubic, antialiased like PIL): 100×100 ×4 → 400×400, "
                        "101×75 → 404×300. SeeSR's test script does this for pre-scaled (small) inputs only; here "
                        "it always happens, so sizes are predictable. Place it after VAE Decode / colour fix.",
            inputs=[
                io.Image.Input("image", tooltip="Decoded result(s) at the processed size (VAE Decode, AR Color Fix)."),
                SIZE.input("SeeSR LR Embedding 'seesr_size'."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The result at upscale × the input size.")])

    @classmethod
    def execute(cls, image, seesr_size) -> io.NodeOutput:
        plan = SIZE.check(seesr_size)
        rgb, alpha = common.image_to_bchw(image)
        w, h = rgb.shape[-1], rgb.shape[-2]
        if (w, h) != plan.process:
            raise InputError(f"SeeSR Final Resize: the 'image' is {w}×{h} but 'seesr_size' plans a processed size "
                             f"of {plan.process[0]}×{plan.process[1]} (for a {plan.input[0]}×{plan.input[1]} input); "
                             "connect the decoded result of the same SeeSR LR Embedding")
        check_finite(rgb, "image to resize")
        return io.NodeOutput(common.bchw_to_image(to_final(rgb, plan).clamp(0, 1), alpha))


NODES = [SeeSRLoader, SeeSRPrompt, SeeSRTextEncode, SeeSRLREmbedding, SeeSRApply, SeeSRTiledSampling,
         SeeSRFinalResize]
