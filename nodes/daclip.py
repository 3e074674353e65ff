"""DA-CLIP nodes: load the model, embed images (clean + degradation), classify degradations, and build
embeddings whose degradation part comes from a text label (to override a wrong classification).

Sockets: ``DACLIP_MODEL`` carries a :class:`DaclipModel` (the ComfyUI ModelPatcher and the inferred config);
``DACLIP_EMBEDS`` carries a :class:`DaclipEmbeds` (``clean`` and ``degradation`` ``[B, D]``, float32 on the CPU).
Both types and payloads are importable from here by other families' nodes (IR-SDE restoration).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from comfy_api.latest import io, ui

from ..core.daclip import (
    DEGRADATIONS,
    DaCLIP,
    DaclipConfig,
    DaclipEmbeds,
    load_daclip,
    parse_labels,
)
from ..core.daclip.classify import encode_images, probabilities, text_features
from . import common

log = logging.getLogger(__name__)

FOLDER = "daclip"
FAMILY = "daclip"
CATEGORY = f"{common.CATEGORY}/DA-CLIP"
DACLIP_MODEL = io.Custom("DACLIP_MODEL")
DACLIP_EMBEDS = io.Custom("DACLIP_EMBEDS")
PRECISIONS = {"auto": None, "fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
ENCODE_BATCH = 8
DEFAULT_LABELS = "\n".join(DEGRADATIONS)

__all__ = ["DACLIP_EMBEDS", "DACLIP_MODEL", "NODES", "DaclipEmbeds", "DaclipModel", "daclip_module"]


@dataclass(frozen=True)
class DaclipModel:
    """What travels on a DACLIP_MODEL socket: the ComfyUI patcher around a :class:`DaCLIP` and its config."""
    patcher: object
    config: DaclipConfig
    name: str


def _memory_required(config: DaclipConfig, batch: int) -> int:
    """Activation memory estimate for encoding ``batch`` images (both towers, fp32, generous)."""
    tokens = (config.image_size // config.patch_size) ** 2 + 1
    per_image = tokens * config.vision_width * 4 * 48 + tokens * tokens * config.vision_heads * 4 * 4
    return 64 * 2**20 + min(batch, ENCODE_BATCH) * per_image


def daclip_module(model: object, batch: int = 1) -> DaCLIP:
    """Load the DA-CLIP of a DACLIP_MODEL payload through ComfyUI's memory manager and return the module."""
    common.expect(model, DaclipModel, "daclip_model", "DACLIP_MODEL", "Load DA-CLIP Model")
    return common.load_payload(model, DaCLIP, _memory_required(model.config, batch))


def _images(image) -> torch.Tensor:
    rgb, _alpha = common.image_to_bchw(image)  # gray → RGB; alpha is not used by DA-CLIP
    return rgb


def _encode(model: DaclipModel, image) -> tuple[DaCLIP, DaclipEmbeds]:
    rgb = _images(image)
    module = daclip_module(model, rgb.shape[0])
    progress = common.progress_callback(rgb.shape[0])
    return module, encode_images(module, rgb, batch_size=ENCODE_BATCH, progress=progress)


def probability_table(labels: list[str], probs: torch.Tensor) -> str:
    """Labels × images table of probabilities (the top label of each image marked with ``*``)."""
    width = max(len("label"), *(len(label) for label in labels))
    top = probs.argmax(dim=1)
    head = "label".ljust(width) + "".join(f"  image {b + 1:<3}" for b in range(probs.shape[0]))
    rows = [head]
    for i, label in enumerate(labels):
        cells = "".join(f"  {probs[b, i].item():7.4f}{'*' if top[b] == i else ' '}  " for b in range(probs.shape[0]))
        rows.append(label.ljust(width) + cells.rstrip())
    return "\n".join(rows)


class DACLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPLoader",
            display_name="Load DA-CLIP Model",
            category=CATEGORY,
            description="Loads a DA-CLIP model (degradation-aware CLIP) from models/daclip: the official "
                        "daclip_ViT-B-32.pt (for universal-ir) or wild-daclip_ViT-L-14.pt (for wild-ir), as "
                        "released (training checkpoint, read safely) or converted to .safetensors. The model size "
                        "is read from the file.",
            inputs=[
                io.Combo.Input("model_name", options=common.model_list(FOLDER),
                               tooltip="DA-CLIP checkpoint in models/daclip (.pt or .safetensors)."),
                io.Combo.Input("precision", options=list(PRECISIONS), default="auto",
                               tooltip="Weight precision: auto = fp16/bf16 on a GPU that supports it, fp32 on CPU."),
            ],
            outputs=[DACLIP_MODEL.Output(display_name="daclip_model",
                                         tooltip="The DA-CLIP model, for the encode / classify nodes and "
                                                 "DA-CLIP restoration.")],
        )

    @classmethod
    def execute(cls, model_name, precision="auto") -> io.NodeOutput:
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {precision!r}")
        sd, path = common.load_checked(FOLDER, model_name, FAMILY)
        dtype = PRECISIONS[precision] or common.compute_dtype()
        module = load_daclip(sd, device="cpu", dtype=dtype)
        del sd
        log.info("DA-CLIP %s from %s (%s)", module.config.name, path, dtype)
        return io.NodeOutput(DaclipModel(common.wrap_model(module), module.config, model_name))


class DACLIPEncode(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPEncode",
            display_name="DA-CLIP Encode Image",
            category=CATEGORY,
            description="Embeds each image with DA-CLIP: a clean-content embedding (the controlled CLIP image "
                        "features) and a degradation embedding (the controller's features), as the official "
                        "restoration pipeline uses them. Images of any size and aspect are resized (shorter side) "
                        "and centre-cropped to the model's input size; alpha is ignored.",
            inputs=[
                DACLIP_MODEL.Input("daclip_model", tooltip="From 'Load DA-CLIP Model'."),
                io.Image.Input("image", tooltip="Image batch to embed (one embedding pair per image)."),
            ],
            outputs=[DACLIP_EMBEDS.Output(display_name="daclip_embeds",
                                          tooltip="Clean + degradation embeddings, one pair per image of the batch.")],
        )

    @classmethod
    def execute(cls, daclip_model, image) -> io.NodeOutput:
        _module, embeds = _encode(daclip_model, image)
        return io.NodeOutput(embeds)


class DACLIPClassifyDegradation(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPClassifyDegradation",
            display_name="DA-CLIP Classify Degradation",
            category=CATEGORY,
            description="Tells what is wrong with each image: the probability of each degradation label, from the "
                        "cosine between the DA-CLIP degradation embedding and the label's text embedding "
                        "(softmax over 100 x cosine, as the official code). The table is shown on the node.",
            is_output_node=True,
            inputs=[
                DACLIP_MODEL.Input("daclip_model", tooltip="From 'Load DA-CLIP Model'."),
                io.Image.Input("image", tooltip="Image batch to classify (each image separately)."),
                io.String.Input("labels", multiline=True, default=DEFAULT_LABELS,
                                tooltip="Candidate labels, one per line (default: the ten degradations DA-CLIP was "
                                        "trained on). Other wordings work too, with less reliable scores."),
                io.Int.Input("top_k", default=1, min=1, max=64,
                             tooltip="How many of the most likely labels each line of 'labels' lists."),
            ],
            outputs=[
                io.String.Output(display_name="labels",
                                 tooltip="Per image one line with its top-k labels (most likely first, comma "
                                         "separated)."),
                io.Float.Output(display_name="probability", is_output_list=True,
                                tooltip="Per image the probability of its most likely label (a list, one per "
                                        "image)."),
                io.String.Output(display_name="table",
                                 tooltip="All probabilities: one row per label, one column per image (* marks "
                                         "each image's top label)."),
            ],
        )

    @classmethod
    def execute(cls, daclip_model, image, labels=DEFAULT_LABELS, top_k=1) -> io.NodeOutput:
        names = parse_labels(labels)
        module, embeds = _encode(daclip_model, image)
        probs = probabilities(embeds.degradation, text_features(module, names))
        k = max(1, min(int(top_k), len(names)))
        top_p, top_i = probs.topk(k, dim=1)
        lines = "\n".join(", ".join(names[j] for j in row.tolist()) for row in top_i)
        table = probability_table(names, probs)
        return io.NodeOutput(lines, [float(p) for p in top_p[:, 0]], table, ui=ui.PreviewText(table))


class DACLIPDegradationFromText(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPDegradationFromText",
            display_name="DA-CLIP Degradation From Text",
            category=CATEGORY,
            description="Like 'DA-CLIP Encode Image', but the degradation embedding is the text embedding of a "
                        "label you choose, so restoration removes that degradation even when the classifier "
                        "guessed wrong. The clean-content embedding still comes from the image.",
            inputs=[
                DACLIP_MODEL.Input("daclip_model", tooltip="From 'Load DA-CLIP Model'."),
                io.Image.Input("image", tooltip="Image batch (the clean-content embeddings come from it)."),
                io.Combo.Input("label", options=list(DEGRADATIONS), default=DEGRADATIONS[0],
                               tooltip="The degradation to remove (one of the ten DA-CLIP was trained on)."),
                io.String.Input("custom_label", default="", optional=True,
                                tooltip="Any other text; when not empty it replaces 'label'."),
                io.Boolean.Input("match_norm", default=True,
                                 tooltip="Scale the text embedding to the length of the image's own degradation "
                                         "embedding (the restoration network was trained on image embeddings; "
                                         "CLIP text and image embeddings have different lengths)."),
            ],
            outputs=[DACLIP_EMBEDS.Output(display_name="daclip_embeds",
                                          tooltip="Clean embeddings of the images + the label's degradation "
                                                  "embedding for every image.")],
        )

    @classmethod
    def execute(cls, daclip_model, image, label=DEGRADATIONS[0], custom_label="", match_norm=True
                ) -> io.NodeOutput:
        text = (custom_label or "").strip() or label
        module, embeds = _encode(daclip_model, image)
        degra = text_features(module, [text]).expand(len(embeds), -1)
        if match_norm:
            norm = embeds.degradation.norm(dim=1, keepdim=True) / degra.norm(dim=1, keepdim=True).clamp_min(1e-12)
            degra = degra * norm
        return io.NodeOutput(DaclipEmbeds(embeds.clean, degra.contiguous()))


NODES = [DACLIPLoader, DACLIPEncode, DACLIPClassifyDegradation, DACLIPDegradationFromText]
