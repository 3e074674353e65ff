"""SSEN nodes: load a model, ×4 reference-based super-resolution, and the offset visualisation."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from comfy_api.latest import io

from ..core.ssen.infer import offset_map, super_resolve
from ..core.ssen.loader import SHIPPED_WEIGHTS, load_ssen
from ..core.ssen.model import SSENet, build_from_state_dict
from ..core.tiling import tile_grid
from . import common

log = logging.getLogger(__name__)

SSEN_MODEL = io.Custom("SSEN_MODEL")
FOLDER = "ssen"
SHIPPED = f"{SHIPPED_WEIGHTS} (shipped)"
CATEGORY = f"{common.CATEGORY}/SSEN"


@dataclass(frozen=True)
class SSENModel:
    """What travels on an SSEN_MODEL socket: the ComfyUI patcher around an :class:`SSENet` and its source."""
    patcher: object
    name: str


def _model(model: object) -> SSENet:
    common.expect(model, SSENModel, "ssen_model", "SSEN_MODEL", "Load SSEN Model")
    return common.load_payload(model, SSENet)


def _reference(reference, batch: int):
    if reference is None:
        return None
    ref, _ = common.image_to_bchw(reference)
    return common.broadcast_batch(ref, batch, "reference")


class SSENLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSENLoader",
            display_name="Load SSEN Model",
            category=CATEGORY,
            description="Loads an SSEN reference-based ×4 super-resolution model. The first choice is the small "
                        "model shipped with the pack; other files come from models/ssen (.safetensors or .pth; "
                        "channels and blocks are read from the file).",
            inputs=[io.Combo.Input("model_name", options=[SHIPPED, *common.model_list(FOLDER)], default=SHIPPED,
                                   tooltip="SSEN checkpoint: the shipped small model, or a file in models/ssen.")],
            outputs=[SSEN_MODEL.Output(display_name="ssen_model", tooltip="The loaded SSEN model.")],
        )

    @classmethod
    def execute(cls, model_name=SHIPPED) -> io.NodeOutput:
        if model_name == SHIPPED:
            module = load_ssen(None)
        else:
            sd, _ = common.load_checked(FOLDER, model_name, "ssen")
            module = build_from_state_dict(sd)
        return io.NodeOutput(SSENModel(common.wrap_model(module), model_name))


class SSENReferenceSR(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSENReferenceSR",
            display_name="SSEN Reference Super-Resolution ×4",
            category=CATEGORY,
            description="×4 super-resolution that borrows texture from a reference image (a similar photo, another "
                        "video frame, the other view of a stereo pair) aligned by SSEN's similarity-aware "
                        "deformable convolutions. Without a reference the image itself is used (self-similarity). "
                        "An unrelated reference is gated off by the modulation masks.",
            inputs=[
                SSEN_MODEL.Input("ssen_model", tooltip="From 'Load SSEN Model'."),
                io.Image.Input("image", tooltip="Low-resolution image(s); the output is 4× larger. Alpha is "
                               "upscaled separately (bicubic)."),
                io.Image.Input("reference", optional=True,
                               tooltip="Reference image, any size (resized to 4× the image). One for the whole "
                                       "batch or one per image. Leave empty for self-similarity mode."),
                io.Int.Input("tile", default=128, min=0, max=4096, step=8,
                             tooltip="Tile side in input pixels for large images (0 = whole image at once)."),
                io.Int.Input("overlap", default=16, min=0, max=256, step=4,
                             tooltip="Overlap between tiles in input pixels (seams are blended)."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The ×4 super-resolved image(s).")],
        )

    @classmethod
    def execute(cls, ssen_model, image, reference=None, tile=128, overlap=16) -> io.NodeOutput:
        module = _model(ssen_model)
        x, alpha = common.image_to_bchw(image)
        ref = _reference(reference, x.shape[0])
        tiles = len(tile_grid(x.shape[-2], x.shape[-1], tile, overlap)) if tile else 1
        progress = common.progress_callback(x.shape[0] * tiles)
        out = super_resolve(module, x, ref, tile=tile or None, overlap=overlap, progress=progress)
        return io.NodeOutput(common.bchw_to_image(out, alpha))


class SSENOffsetMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSENOffsetMap",
            display_name="SSEN Offset Map",
            category=CATEGORY,
            description="Shows where SSEN's deformable sampling points land in the reference (the paper's Fig. 7): "
                        "dots over the dimmed reference, green where the modulation mask uses the reference, red "
                        "where it gates it off; white dots are the undeformed positions. Also a heat map of the "
                        "mask (bright = the reference is used).",
            inputs=[
                SSEN_MODEL.Input("ssen_model", tooltip="From 'Load SSEN Model'."),
                io.Image.Input("image", tooltip="Low-resolution image(s)."),
                io.Image.Input("reference", optional=True,
                               tooltip="Reference image, any size; one for all or one per image. Empty: the image "
                                       "itself (self-similarity)."),
                io.Int.Input("step", default=8, min=2, max=64,
                             tooltip="Draw the sampling points of every step-th input pixel."),
            ],
            outputs=[
                io.Image.Output(display_name="offsets", tooltip="Sampling points over the reference (4× size)."),
                io.Image.Output(display_name="similarity", tooltip="Mean modulation mask as a heat map (4× size)."),
            ],
        )

    @classmethod
    def execute(cls, ssen_model, image, reference=None, step=8) -> io.NodeOutput:
        module = _model(ssen_model)
        x, _ = common.image_to_bchw(image)
        ref = _reference(reference, x.shape[0])
        progress = common.progress_callback(x.shape[0])
        points, heat = [], []
        for i in range(x.shape[0]):
            p, h = offset_map(module, x[i:i + 1], None if ref is None else ref[i:i + 1], step=step)
            points.append(p)
            heat.append(h)
            progress(i + 1, x.shape[0])
        return io.NodeOutput(common.bchw_to_image(torch.cat(points)), common.bchw_to_image(torch.cat(heat)))


NODES = [SSENLoader, SSENReferenceSR, SSENOffsetMap]
