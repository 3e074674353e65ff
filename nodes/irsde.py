"""DA-CLIP universal restoration nodes: load an IR-SDE network, restore images with DA-CLIP conditioning."""

from __future__ import annotations

from comfy_api.latest import io

from ..core.irsde import ARCH, SAMPLERS, pairing_hint, restore
from ..core.irsde.arch import restore_memory
from ..core.irsde.restore import TILE_MODES
from . import common
from .daclip import DACLIP, DACLIP_EMB

IRSDE_MODEL = io.Custom("IRSDE_MODEL")
FOLDER = "irsde"
CATEGORY = f"{common.CATEGORY}/DA-CLIP"
IRSDE = common.ModelSocket(IRSDE_MODEL, "irsde_model", "Load IR-SDE Model", ARCH.id)
STEPS = 100
TILE = 512  # default tile side of IR-SDE restoration (exact low-memory mode by default)


def seed_input(tooltip: str) -> io.Input:
    """The IR-SDE noise seed widget (image b of a batch uses seed + b)."""
    return io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True, tooltip=tooltip)


def tile_input(tooltip: str) -> io.Input:
    """The IR-SDE tile side widget (0 = whole image)."""
    return io.Int.Input("tile", default=TILE, min=0, max=8192, step=16, tooltip=tooltip)


class IRSDELoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="IRSDELoader",
            display_name="Load IR-SDE Model (DA-CLIP restoration)",
            category=CATEGORY,
            description="Loads the IR-SDE restoration network of DA-CLIP from models/irsde: universal-ir.pth "
                        "(ten degradations; pair it with daclip_ViT-B-32.pt) or wild-ir.pth (real-world photos; "
                        "pair it with wild-daclip_ViT-L-14.pt). The variant and sizes are read from the file.",
            inputs=[common.model_name_input(FOLDER, "IR-SDE checkpoint in models/irsde (.pth or .safetensors).")],
            outputs=[IRSDE.output("The IR-SDE network (universal or wild variant).")],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        return common.loaded(FOLDER, model_name, ARCH.id)


class DACLIPRestore(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DACLIPRestore",
            display_name="DA-CLIP Universal Restore (IR-SDE)",
            category=CATEGORY,
            description="Removes the degradation DA-CLIP sees in the image (blur, haze, JPEG, low light, noise, "
                        "raindrops, rain, shadow, snow, missing regions) by running the IR-SDE reverse process for "
                        "100 steps, conditioned on DA-CLIP's clean and degradation embeddings. Connect a DA-CLIP "
                        "model (it embeds the image) or DACLIP_EMBEDS (e.g. with a degradation chosen by text). "
                        f"Pairs: {pairing_hint()}.",
            inputs=[
                IRSDE.input(),
                io.Image.Input("image", tooltip="Degraded image(s); output has the same size. Alpha passes through."),
                DACLIP.input("DA-CLIP model that embeds each image (B-32 for universal-ir, L-14 for wild-ir). Needed "
                             "unless daclip_embeds is connected.", optional=True),
                DACLIP_EMB.input("Precomputed DA-CLIP embeddings (one for all images or one per image); used instead "
                                 "of daclip_model when connected.", optional=True),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="posterior",
                               tooltip="posterior: the official optimal-posterior sampler (default); sde: Euler "
                                       "steps of the reverse SDE."),
                seed_input("Noise seed; image b of a batch uses seed + b, so batches match single runs."),
                tile_input("Tile side in pixels (0 = whole image at once). Images within one tile are processed "
                           "whole; for larger ones the tile bounds the memory."),
                io.Int.Input("overlap", default=64, min=0, max=512, step=8,
                             tooltip="'tiles' mode only: overlap between tiles in pixels (blended at every step; at "
                                     "most half the tile is used)."),
                io.Combo.Input("tile_mode", options=list(TILE_MODES), default="exact",
                               tooltip="exact: the same result as the whole image, at a memory bounded by the tile "
                                       "(low-memory evaluation). tiles: the network on overlapping tiles — faster "
                                       "on small GPUs, but every tile normalises and attends on its own, which "
                                       "changes the result."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The restored image(s).")],
        )

    @classmethod
    def execute(cls, irsde_model, image, daclip_model=None, daclip_embeds=None, sampler="posterior", seed=0,
                tile=TILE, overlap=64, tile_mode="exact") -> io.NodeOutput:
        net = IRSDE.check(irsde_model)
        x, alpha = common.image_to_bchw(image)
        h, w = x.shape[-2:]
        loads = [(net, restore_memory(net.descriptor.config, (h, w), tile, tile_mode))]
        cond = None
        if daclip_embeds is not None:
            cond = DACLIP_EMB.check(daclip_embeds)
        elif daclip_model is not None:
            loads.append(DACLIP.reserve(daclip_model, x.shape[0]))
        network, *clip = common.load_models(*loads)
        cond = clip[0] if clip else cond
        # core moves one image at a time to the model's device and returns the batch on the input's (CPU) device
        out = restore(network, cond, x, steps=STEPS, sampler=sampler, seed=seed, tile=tile or None,
                      tile_overlap=overlap, tile_mode=tile_mode, progress=common.progress_callback(x.shape[0] * STEPS))
        return io.NodeOutput(common.bchw_to_image(out, alpha))


NODES = [IRSDELoader, DACLIPRestore]
