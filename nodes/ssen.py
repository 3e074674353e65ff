"""SSEN nodes: load a model, ×4 reference-based super-resolution, and the offset visualisation."""

from __future__ import annotations

import logging

from comfy_api.latest import io

from ..core import registry
from ..core.ssen import ARCH, SHIPPED_WEIGHTS, shipped_weights
from ..core.ssen.arch import sr_memory
from ..core.ssen.infer import offset_map, super_resolve
from . import common

log = logging.getLogger(__name__)

SSEN_MODEL = io.Custom("SSEN_MODEL")
SSEN = common.ModelSocket(SSEN_MODEL, "ssen_model", "Load SSEN Model", ARCH.id)
FOLDER = "ssen"
SHIPPED = f"{SHIPPED_WEIGHTS} (shipped)"
CATEGORY = f"{common.CATEGORY}/SSEN"


def _model(value: object, batch: int, size: tuple[int, int], tile: int | None = None):
    payload = SSEN.check(value)
    (module,) = common.load_models((payload, sr_memory(payload.descriptor.config, size, tile, batch)))
    return module


def _reference(reference):
    return None if reference is None else common.image_to_bchw(reference)[0]


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
            outputs=[SSEN.output("The loaded SSEN model.")],
        )

    @classmethod
    def execute(cls, model_name=SHIPPED) -> io.NodeOutput:
        if model_name == SHIPPED:
            desc = registry.load(shipped_weights(), ARCH.id, folder=FOLDER)
        else:
            desc = common.load_file(FOLDER, model_name, ARCH.id)
        return common.model_output(desc, model_name)


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
                        "The reference need not be aligned: its content is searched for (±64 output pixels, then "
                        "refined by the deformable layers); where it does not match (an unrelated photo) a "
                        "similarity gate falls back to self-similarity.",
            inputs=[
                SSEN.input(),
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
        x, alpha = common.image_to_bchw(image)
        module = _model(ssen_model, 1, tuple(x.shape[-2:]), tile or None)
        out = super_resolve(module, x, _reference(reference), tile=tile or None, overlap=overlap,
                            progress=common.progress_callback())
        return io.NodeOutput(common.bchw_to_image(out, alpha))


class SSENOffsetMap(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SSENOffsetMap",
            display_name="SSEN Offset Map",
            category=CATEGORY,
            description="Shows where SSEN reads each pixel's content in the reference (the paper's Fig. 7): over "
                        "the dimmed reference, a white dot at the pixel, a dotted line to where its content is read "
                        "and the 3×3 footprint there, green where the reference is used, red where it is gated "
                        "off. Also the reference's weight as a heat map (bright = used) and the reference scale "
                        "chosen per region.",
            inputs=[
                SSEN.input(),
                io.Image.Input("image", tooltip="Low-resolution image(s)."),
                io.Image.Input("reference", optional=True,
                               tooltip="Reference image, any size; one for all or one per image. Empty: the image "
                                       "itself (self-similarity)."),
                io.Int.Input("step", default=8, min=2, max=64,
                             tooltip="Draw the sampling points of every step-th input pixel."),
            ],
            outputs=[
                io.Image.Output(display_name="offsets", tooltip="Displacements drawn over the reference (4× size)."),
                io.Image.Output(display_name="similarity",
                                tooltip="Weight of the reference (learned detail weight × similarity gate) as a heat "
                                        "map (4× size)."),
                io.Image.Output(display_name="scale",
                                tooltip="The reference scale chosen per region by the scale search: blue 0.5×, white "
                                        "1×, red 2× (grey where the reference is not used), 4× size."),
            ],
        )

    @classmethod
    def execute(cls, ssen_model, image, reference=None, step=8) -> io.NodeOutput:
        x, _ = common.image_to_bchw(image)
        module = _model(ssen_model, x.shape[0], tuple(x.shape[-2:]))
        points, heat, scale = offset_map(module, x, _reference(reference), step=step, with_scale=True)
        return io.NodeOutput(common.bchw_to_image(points), common.bchw_to_image(heat), common.bchw_to_image(scale))


NODES = [SSENLoader, SSENReferenceSR, SSENOffsetMap]
