"""DAPE / RAM nodes: load the RAM tagger (optionally with SeeSR's DAPE LoRA merged) and tag images.

STRING output design: ``tags`` is an output LIST with one string per image (``is_output_list``), so a batch of B
images gives B prompts and a downstream CLIPTextEncode runs once per image; for a single image it is just the
tag string. ``tags_text`` is one STRING with the per-image strings joined by newlines (for display, saving or
a single prompt). ``DAPE_EMBEDS`` carries the per-image [B,145,512] embeddings and the tag strings together.
"""

from __future__ import annotations

import logging

import torch
from comfy_api.latest import io

from ..core.errors import WrongModelError
from ..core.paths import first_match
from ..core.ram import RAM, DapeEmbeds, load_tagger_descriptor, tag_images
from ..core.ram.keys import DAPE_FILE, DAPE_PATTERNS, RAM_FILE, RAM_PATTERNS
from . import common

log = logging.getLogger(__name__)

DAPE_MODEL = io.Custom("DAPE_MODEL")
DAPE_EMBEDS = io.Custom("DAPE_EMBEDS")
FOLDER = "dape"
NONE = "none"
CATEGORY = f"{common.CATEGORY}/DAPE"
DAPE = common.ModelSocket(DAPE_MODEL, "dape_model", "Load DAPE / RAM Tagger", RAM.id)
DAPE_EMB = common.PayloadSocket(DAPE_EMBEDS, "dape_embeds", "DAPE Tagger", DapeEmbeds)


class DAPELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        files = common.model_list(FOLDER)
        ram_default = first_match(files, RAM_PATTERNS) or (files[0] if files else None)
        dape_default = first_match(files, DAPE_PATTERNS) or NONE
        return io.Schema(
            node_id="DAPELoader",
            display_name=DAPE.source,
            category=CATEGORY,
            description=f"Loads the RAM Swin-L tagger ({RAM_FILE}, or a converted .safetensors) from models/dape and "
                        f"merges SeeSR's degradation-aware DAPE LoRA ({DAPE_FILE}) into it when given. With DAPE the "
                        "tags and embeddings are robust to degradations (SeeSR's prompts); without it this is plain "
                        "RAM tagging.",
            inputs=[
                io.Combo.Input("ram_name", options=files, default=ram_default,
                               tooltip=f"The base RAM checkpoint in models/dape ({RAM_FILE}, ≈5 GB, or its "
                                       "converted fp16 .safetensors)."),
                io.Combo.Input("dape_name", options=[NONE, *files], default=dape_default,
                               tooltip=f"SeeSR's DAPE LoRA ({DAPE_FILE}, 7 MB) merged into RAM; 'none' = plain RAM. "
                                       "Ignored for a converted file that already has DAPE merged."),
            ],
            outputs=[DAPE.output("The RAM tagger (with DAPE merged).")],
        )

    @classmethod
    def execute(cls, ram_name, dape_name=NONE) -> io.NodeOutput:
        ram_path = common.resolve_file(FOLDER, ram_name, "RAM tagger")
        dape_path = None if dape_name in (None, "", NONE) else common.resolve_file(FOLDER, dape_name, "DAPE LoRA")
        if dape_path is not None and dape_path == ram_path:
            raise WrongModelError(f"'{ram_name}' was selected as both the RAM model and the DAPE LoRA; choose "
                                  f"{RAM_FILE} as ram_name and {DAPE_FILE} as dape_name.")
        dtype = common.compute_dtype((torch.float16, torch.float32), model_params=213_000_000)
        with common.naming_folders(FOLDER):
            desc = load_tagger_descriptor(ram_path, dape_path, dtype=dtype)
        return common.model_output(desc, ram_name)


class DAPETagger(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DAPETagger",
            display_name="DAPE / RAM Tag Image",
            category=CATEGORY,
            description="Tags every image of the batch (RAM's 4585 tags, per-class thresholds, tags in tag-list order "
                        "joined with ', ') and returns the image embeddings that SeeSR's image cross-attention uses. "
                        "The tags are shown on the node.",
            inputs=[
                *DAPE.image_inputs("Image(s) of any size; each is stretched to 384×384 (bilinear, antialiased). "
                                   "Alpha is ignored, grayscale is used as RGB."),
                io.Float.Input("threshold", default=0.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0 = RAM's per-class thresholds (recommended). Otherwise one probability "
                                       "threshold for every tag (higher = fewer tags)."),
                io.String.Input("exclude", default="", multiline=True,
                                tooltip="Tags to drop, separated by commas or new lines (case-insensitive)."),
                io.Int.Input("max_tags", default=0, min=0, max=4585,
                             tooltip="Keep at most this many tags per image (the most probable); 0 = no limit."),
                io.Boolean.Input("antialias", default=True,
                                 tooltip="Antialiased resize to 384×384 (current torchvision). Off reproduces "
                                         "SeeSR's pinned torchvision 0.15, which aliases when a side shrinks."),
            ],
            outputs=[
                io.String.Output(display_name="tags", is_output_list=True,
                                 tooltip="One tag string per image (a list: downstream nodes such as CLIPTextEncode "
                                         "run once per image). For one image: simply its tags."),
                io.String.Output(display_name="tags_text",
                                 tooltip="All images' tag strings in one STRING, one line per image."),
                DAPE_EMB.output("Per-image embeddings [B,145,512] and tags (SeeSR's soft and hard prompt)."),
            ],
        )

    @classmethod
    def execute(cls, dape_model, image, threshold=0.0, exclude="", max_tags=0, antialias=True) -> io.NodeOutput:
        tagger, x, progress = DAPE.prepare(dape_model, image)
        payload = tag_images(tagger, x, threshold or None, exclude, max_tags or None, antialias, progress=progress)
        tags = list(payload.tags)
        shown = tags if len(tags) == 1 else [f"{i + 1}: {t}" for i, t in enumerate(tags)]
        return io.NodeOutput(tags, "\n".join(tags), payload, ui={"text": shown})


NODES = [DAPELoader, DAPETagger]
