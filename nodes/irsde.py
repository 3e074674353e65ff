"""DA-CLIP universal restoration nodes: load an IR-SDE network, restore images with DA-CLIP conditioning."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from comfy_api.latest import io

from ..core.daclip import DaclipEmbeds
from ..core.irsde import SAMPLERS, ConditionalUNet, UNetConfig, check_context, embeddings, load_irsde, restore
from ..core.irsde.restore import ContextMismatchError, pairing_hint
from ..core.tiling import tile_grid
from . import common
from .daclip import DACLIP_EMBEDS, DACLIP_MODEL, daclip_module

log = logging.getLogger(__name__)

IRSDE_MODEL = io.Custom("IRSDE_MODEL")
FOLDER = "irsde"
CATEGORY = f"{common.CATEGORY}/DA-CLIP"
STEPS = 100


@dataclass(frozen=True)
class IRSDEModel:
    """What travels on an IRSDE_MODEL socket: the ComfyUI patcher around a ConditionalUNet and its facts."""
    patcher: object
    name: str
    config: UNetConfig

    @property
    def variant(self) -> str:  # "universal" or "wild"
        return self.config.variant

    @property
    def context_dim(self) -> int:
        return self.config.context_dim


def _check_model(model: object) -> IRSDEModel:
    return common.expect(model, IRSDEModel, "irsde_model", "IRSDE_MODEL", "Load IR-SDE Model")


def _network(model: IRSDEModel, memory_required: int) -> ConditionalUNet:
    return common.load_payload(model, ConditionalUNet, memory_required)


def _memory_required(h: int, w: int, tile: int, nf: int) -> int:
    """Activation bytes of one fp32 network call on an ``h x w`` input (or one tile), with headroom: measured on
    CPU for universal-ir (nf 64) at 512², about 1.4 GB above the weights, i.e. ~21 floats x nf per pixel."""
    side_h, side_w = (min(h, tile), min(w, tile)) if tile else (h, w)
    return int(side_h * side_w * nf * 4 * 32)


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
            inputs=[io.Combo.Input("model_name", options=common.model_list(FOLDER),
                                   tooltip="IR-SDE checkpoint in models/irsde (.pth or .safetensors).")],
            outputs=[IRSDE_MODEL.Output(display_name="irsde_model",
                                        tooltip="The IR-SDE network (universal or wild variant).")],
        )

    @classmethod
    def execute(cls, model_name) -> io.NodeOutput:
        sd, path = common.load_checked(FOLDER, model_name, "irsde")
        network = load_irsde(sd)
        log.info("IR-SDE %s: %s-ir, nf %d, context %d", path, network.variant, network.config.nf,
                 network.config.context_dim)
        return io.NodeOutput(IRSDEModel(common.wrap_model(network), model_name, network.config))


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
                IRSDE_MODEL.Input("irsde_model", tooltip="From 'Load IR-SDE Model'."),
                io.Image.Input("image", tooltip="Degraded image(s); output has the same size. Alpha passes through."),
                DACLIP_MODEL.Input("daclip_model", optional=True,
                                   tooltip="DA-CLIP model that embeds each image (B-32 for universal-ir, L-14 for "
                                           "wild-ir). Needed unless daclip_embeds is connected."),
                DACLIP_EMBEDS.Input("daclip_embeds", optional=True,
                                    tooltip="Precomputed DA-CLIP embeddings (one for all images or one per image); "
                                            "used instead of daclip_model when connected."),
                io.Combo.Input("sampler", options=list(SAMPLERS), default="posterior",
                               tooltip="posterior: the official optimal-posterior sampler (default); sde: Euler "
                                       "steps of the reverse SDE."),
                io.Int.Input("seed", default=0, min=0, max=0xFFFFFFFFFFFFFFFF, control_after_generate=True,
                             tooltip="Noise seed; image b of a batch uses seed + b, so batches match single runs."),
                io.Int.Input("tile", default=1024, min=0, max=8192, step=16,
                             tooltip="Tile side in pixels (0 = whole image). Images within one tile are "
                                     "processed whole; larger ones are restored tile by tile at every step, "
                                     "which limits memory but the deepest attention then sees only its tile."),
                io.Int.Input("overlap", default=64, min=0, max=512, step=8,
                             tooltip="Overlap between tiles in pixels (blended at every step)."),
            ],
            outputs=[io.Image.Output(display_name="image", tooltip="The restored image(s).")],
        )

    @classmethod
    def execute(cls, irsde_model, image, daclip_model=None, daclip_embeds=None, sampler="posterior", seed=0,
                tile=1024, overlap=64) -> io.NodeOutput:
        if daclip_model is None and daclip_embeds is None:
            raise ValueError("DA-CLIP Universal Restore needs DA-CLIP conditioning: connect 'daclip_model' (from "
                             "'Load DA-CLIP Model') or 'daclip_embeds' (from 'DA-CLIP Encode'). "
                             f"Pairs: {pairing_hint()}.")
        if tile and tile < 32:
            raise ValueError(f"tile must be 0 (off) or at least 32 pixels, got {tile}")
        irsde_model = _check_model(irsde_model)
        x, alpha = common.image_to_bchw(image)
        if daclip_embeds is not None:
            cond = daclip_embeds
        else:
            width = getattr(getattr(daclip_model, "config", None), "embed_dim", None)
            if isinstance(width, int):
                check_context_dim(irsde_model, width)  # before spending time on the DA-CLIP encode
            cond = daclip_module(daclip_model, x.shape[0])
            cond = DaclipEmbeds(*embeddings(cond, x))
        common.expect(cond, DaclipEmbeds, "daclip_embeds", "DACLIP_EMBEDS", "DA-CLIP Encode Image")
        check_context_dim(irsde_model, int(cond.clean.shape[-1]))
        h, w = x.shape[-2:]
        network = _network(irsde_model, _memory_required(h, w, tile, irsde_model.config.nf))
        check_context(network, int(cond.clean.shape[-1]))
        device = common.model_device(network)
        tiles = len(tile_grid(h, w, tile, overlap)) if tile else 1
        log.info("DA-CLIP restore: %d image(s) %dx%d, %s-ir, %s sampler, %d tile(s)", x.shape[0], w, h,
                 network.variant, sampler, tiles)
        progress = common.progress_callback(x.shape[0] * STEPS)
        out = restore(network, cond, x.to(device), steps=STEPS, sampler=sampler, seed=seed, tile=tile or None,
                      tile_overlap=overlap, progress=progress)
        return io.NodeOutput(common.bchw_to_image(out.cpu(), alpha))


def check_context_dim(model: IRSDEModel, width: int) -> None:
    """Compare the embedding width with the network's context width recorded at load time."""
    if model.context_dim > 0 and width != model.context_dim:
        raise ContextMismatchError(
            f"The DA-CLIP embeddings are {width}-wide but the IR-SDE model '{model.name}' ({model.variant}-ir) "
            f"expects {model.context_dim}-wide embeddings. The models belong together in pairs: {pairing_hint()}. "
            f"Load the DA-CLIP model that matches the IR-SDE model.")


NODES = [IRSDELoader, DACLIPRestore]
