"""DA-CLIP nodes: load the model, embed images (clean + degradation), classify degradations, and build
embeddings whose degradation part comes from a text label (to override a wrong classification).

Sockets: ``DACLIP_MODEL`` carries a :class:`.common.ModelPayload` (the ComfyUI ModelPatcher and the descriptor);
``DACLIP_EMBEDS`` carries a :class:`DaclipEmbeds` (``clean`` and ``degradation`` ``[B, D]``, float32 on the CPU).
Both types and payloads are importable from here by other families' nodes (IR-SDE restoration).
"""

from __future__ import annotations

from comfy_api.latest import io, ui

from ..core.daclip import (
    ARCH,
    DEGRADATIONS,
    DaclipEmbeds,
    classify_report,
    degradation_from_text,
    encode_images,
)
from . import common

FOLDER = "daclip"
CATEGORY = f"{common.CATEGORY}/DA-CLIP"
DACLIP_MODEL = io.Custom("DACLIP_MODEL")
DACLIP_EMBEDS = io.Custom("DACLIP_EMBEDS")
DACLIP = common.ModelSocket(DACLIP_MODEL, "daclip_model", "Load DA-CLIP Model", ARCH.id)
DACLIP_EMB = common.PayloadSocket(DACLIP_EMBEDS, "daclip_embeds", "DA-CLIP Encode Image", DaclipEmbeds)
DEFAULT_LABELS = "\n".join(DEGRADATIONS)

__all__ = ["DACLIP", "DACLIP_EMB", "DACLIP_EMBEDS", "DACLIP_MODEL", "NODES", "DaclipEmbeds"]


class DACLIPLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPLoader",
            display_name=DACLIP.source,
            category=CATEGORY,
            description="Loads a DA-CLIP model (degradation-aware CLIP) from models/daclip: the official "
                        "daclip_ViT-B-32.pt (for universal-ir) or wild-daclip_ViT-L-14.pt (for wild-ir), as "
                        "released (training checkpoint, read safely) or converted to .safetensors. The model size "
                        "is read from the file.",
            inputs=[
                common.model_name_input(FOLDER, "DA-CLIP checkpoint in models/daclip (.pt or .safetensors)."),
                common.dtype_input(),
            ],
            outputs=[DACLIP.output("The DA-CLIP model, for the encode / classify nodes and DA-CLIP restoration.")],
        )

    @classmethod
    def execute(cls, model_name, dtype="auto") -> io.NodeOutput:
        return common.loaded(FOLDER, model_name, ARCH.id, common.widget_dtype(dtype))


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
            inputs=DACLIP.image_inputs("Image batch to embed (one embedding pair per image)."),
            outputs=[DACLIP_EMB.output("Clean + degradation embeddings, one pair per image of the batch.")],
        )

    @classmethod
    def execute(cls, daclip_model, image) -> io.NodeOutput:
        module, rgb, progress = DACLIP.prepare(daclip_model, image)
        return io.NodeOutput(encode_images(module, rgb, progress=progress))


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
                *DACLIP.image_inputs("Image batch to classify (each image separately)."),
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
        module, rgb, progress = DACLIP.prepare(daclip_model, image)
        r = classify_report(module, rgb, labels, top_k, progress=progress)
        return io.NodeOutput("\n".join(r.top), r.top_probability, r.table, ui=ui.PreviewText(r.table))


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
                *DACLIP.image_inputs("Image batch (the clean-content embeddings come from it)."),
                io.Combo.Input("label", options=list(DEGRADATIONS), default=DEGRADATIONS[0],
                               tooltip="The degradation to remove (one of the ten DA-CLIP was trained on)."),
                io.String.Input("custom_label", default="", optional=True,
                                tooltip="Any other text; when not empty it replaces 'label'."),
                io.Boolean.Input("match_norm", default=True,
                                 tooltip="Scale the text embedding to the length of the image's own degradation "
                                         "embedding (the restoration network was trained on image embeddings; "
                                         "CLIP text and image embeddings have different lengths)."),
            ],
            outputs=[DACLIP_EMB.output("Clean embeddings of the images + the label's degradation embedding for "
                                       "every image.")],
        )

    @classmethod
    def execute(cls, daclip_model, image, label=DEGRADATIONS[0], custom_label="", match_norm=True
                ) -> io.NodeOutput:
        module, rgb, progress = DACLIP.prepare(daclip_model, image)
        text = (custom_label or "").strip() or label
        return io.NodeOutput(degradation_from_text(module, rgb, text, match_norm, progress=progress))


NODES = [DACLIPLoader, DACLIPEncode, DACLIPClassifyDegradation, DACLIPDegradationFromText]
