"""SeeSR native in ComfyUI — the nodes: the user's SD-2 MODEL (CheckpointLoaderSimple / UNETLoader) patched with
SeeSR's RCA blocks, SeeSR's ControlNet attached to the conditioning, sampled by any core sampler.

* **Load SeeSR** (:func:`.seesr_patch.load_native`): the UNet's 16 RCA blocks (only those tensors are read) and
  the ControlNet's 7 under ComfyUI's current patcher class, the ControlNet itself as ComfyUI's own ``cldm``
  ControlNet under core's own patcher.
* **SeeSR Apply** checks the MODEL (SD-2-base layout, eps prediction) and the DAPE embeddings (width, batch),
  clones the MODEL and adds the RCA ``DIFFUSION_MODEL`` wrapper (:class:`.seesr_patch.RCAPatch`); the RCA
  patcher is registered with ``set_additional_models`` so the memory manager loads it with the UNet. The
  ControlNet is a ``ControlBase`` (:class:`.seesr_control.SeeSRControl`), one instance per previous control
  shared by positive and negative (so cond and uncond stay batched), chained like core *Apply ControlNet*.
* **SeeSR Tiled Sampling** (:mod:`.seesr_tiling`): SeeSR's latent tiling as ``CALC_COND_BATCH`` /
  ``PREPARE_SAMPLING`` wrappers, so every core sampler is tiled.

Node ids and socket names are stable (saved workflows load). The parts live in :mod:`.seesr_patch` (loading,
RCA patch, checks), :mod:`.seesr_control` (ControlNet) and :mod:`.seesr_tiling` (tiling); import them from
there.
"""

from __future__ import annotations

import comfy.patcher_extension
from comfy_api.latest import io

from ..core.errors import InputError
from . import common
from .dape import DAPE_EMB
from .seesr_control import SeeSRControl, attach_control
from .seesr_patch import (
    ARCH,
    KEY,
    RCAPatch,
    SeeSRNative,
    check_embeds,
    check_unet,
    load_native,
)
from .seesr_tiling import DEFAULT_OVERLAP, DEFAULT_TILE, SeeSRTiles, TiledMemory

SEESR_MODEL = io.Custom("SEESR_MODEL")
FOLDER = "seesr"
CATEGORY = f"{common.CATEGORY}/SeeSR"
TILES_KEY = "aware_restore_seesr_tiles"
SEESR = common.ModelSocket(SEESR_MODEL, "seesr_model", "Load SeeSR", ARCH)


# ----------------------------------------------------------------------------------------------- nodes
class SeeSRLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        names = common.model_dirs(FOLDER, ["unet", "controlnet"])
        return io.Schema(
            node_id="SeeSRLoader", display_name="Load SeeSR", category=CATEGORY,
            description="Loads what SeeSR adds to SD-2 from the release folder in models/seesr (unet/ + "
                        "controlnet/): the UNet's 16 RCA image cross-attention blocks (only those tensors are read) "
                        "and the ControlNet (ComfyUI's own ControlNet + its 7 RCA blocks), strictly. The SD-2 UNet "
                        "itself is the MODEL from Load Checkpoint.",
            inputs=[
                io.Combo.Input("model_name", options=names, default=names[0] if names else None,
                               tooltip="Folder in models/seesr holding 'unet' and 'controlnet'."),
                common.dtype_input("Weight dtype of the RCA blocks and the ControlNet: auto = ComfyUI's choice for "
                                   "the device (as for a diffusion model); computation follows the MODEL."),
            ],
            outputs=[SEESR.output("SeeSR's RCA blocks and ControlNet, for SeeSR Apply.")])

    @classmethod
    def execute(cls, model_name, dtype="auto") -> io.NodeOutput:
        folder = common.resolve_dir(FOLDER, model_name, "SeeSR")
        return io.NodeOutput(load_native(folder, dtype, model_name))


class SeeSRApply(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRApply", display_name="SeeSR Apply", category=CATEGORY,
            description="Makes an SD-2 MODEL + conditioning sample SeeSR: RCA image cross-attention (DAPE "
                        "embeddings) after every UNet transformer, and SeeSR's ControlNet on the LR condition image "
                        "attached to positive and negative. Sample with core KSampler (denoise 1.0) from the "
                        "VAE-encoded LR image (SeeSR LR Embedding). In a batch, DAPE embedding i and condition image i "
                        "go with latent image i (one of each serves every image); a DAPE batch or width that does "
                        "not fit, or a v-prediction MODEL, is an error.",
            inputs=[
                io.Model.Input("model", tooltip="SD-2-base-compatible MODEL (Load Checkpoint: 512-base-ema, SD-Turbo; "
                                                "or the SeeSR release UNet via Load Diffusion Model). LoRA/FreeU may "
                                                "come before or after."),
                io.Conditioning.Input("positive", tooltip="CLIP Text Encode (SD-2 CLIP) of SeeSR Prompt 'positive'."),
                io.Conditioning.Input("negative", tooltip="CLIP Text Encode (SD-2 CLIP) of SeeSR Prompt 'negative'."),
                SEESR.input("From Load SeeSR."),
                DAPE_EMB.input("DAPE Tagger embeddings of the LR image (one per image, or one for all)."),
                io.Image.Input("image", tooltip="The ControlNet condition: SeeSR LR Embedding 'condition_image' (8× "
                                                "the latent; other sizes are resized)."),
                io.Float.Input("control_strength", default=1.0, min=0.0, max=2.0, step=0.01,
                               tooltip="Scale of the ControlNet residuals (official 1.0). RCA always runs."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress where the ControlNet starts."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Sampling progress where the ControlNet stops."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The MODEL with SeeSR's RCA blocks."),
                     io.Conditioning.Output(display_name="positive", tooltip="Positive with SeeSR's ControlNet."),
                     io.Conditioning.Output(display_name="negative", tooltip="Negative with SeeSR's ControlNet.")])

    @classmethod
    def execute(cls, model, positive, negative, seesr_model, dape_embeds, image, control_strength=1.0,
                start_percent=0.0, end_percent=1.0) -> io.NodeOutput:
        native: SeeSRNative = SEESR.check(seesr_model).descriptor.model
        emb = DAPE_EMB.check(dape_embeds)
        if start_percent > end_percent:
            raise InputError(f"start_percent {start_percent} is after end_percent {end_percent}")
        check_unet(model, native.rca.unet)
        hint, _ = common.image_to_bchw(image)
        states = emb.embeds.detach().float().cpu()
        check_embeds(states, native, hint.shape[0])
        m = model.clone()
        m.set_additional_models(KEY, [native.rca_patcher])
        m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY,
                               RCAPatch(native.rca.unet, states))
        base = SeeSRControl(native, states)
        shared: dict[int, SeeSRControl] = {}
        pos = attach_control(positive, base, control_strength, start_percent, end_percent, hint, shared)
        neg = attach_control(negative, base, control_strength, start_percent, end_percent, hint, shared)
        return io.NodeOutput(m, pos, neg)


class SeeSRTiledSampling(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="SeeSRTiledSampling", display_name="SeeSR Tiled Sampling", category=CATEGORY,
            description="SeeSR's latent tiling as a model wrapper: every model call of any sampler runs per square "
                        "latent tile (official grid, Gaussian blending), so memory stays bounded at any output size. "
                        "Tiling starts when the latent has more than tile² pixels; SeeSR's ControlNet crops its "
                        "hint per tile. Composes with other model patches and wrappers.",
            inputs=[
                io.Model.Input("model", tooltip="A MODEL (usually from SeeSR Apply)."),
                io.Int.Input("tile_size", default=DEFAULT_TILE, min=16, max=512, step=8,
                             tooltip="Latent tile side (×8 pixels). 96, as in test_seesr.py and test_seesr_turbo.py."),
                io.Int.Input("tile_overlap", default=DEFAULT_OVERLAP, min=0, max=256, step=4,
                             tooltip="Tile overlap in latent pixels (at most half the tile). test_seesr.py: 4 (at "
                                     "8edecc7), test_seesr_turbo.py: 32; 32 hides the seams."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The MODEL with tiled model calls.")])

    @classmethod
    def execute(cls, model, tile_size=DEFAULT_TILE, tile_overlap=DEFAULT_OVERLAP) -> io.NodeOutput:
        tiles = SeeSRTiles(tile_size, tile_overlap, SeeSRControl)
        m = model.clone()
        WMP = comfy.patcher_extension.WrappersMP
        m.remove_wrappers_with_key(WMP.CALC_COND_BATCH, TILES_KEY)
        m.remove_wrappers_with_key(WMP.PREPARE_SAMPLING, TILES_KEY)
        m.add_wrapper_with_key(WMP.CALC_COND_BATCH, TILES_KEY, tiles)
        m.add_wrapper_with_key(WMP.PREPARE_SAMPLING, TILES_KEY, TiledMemory(tiles))
        return io.NodeOutput(m)


NODES: list[type[io.ComfyNode]] = [SeeSRLoader, SeeSRApply, SeeSRTiledSampling]
__all__ = ["CATEGORY", "FOLDER", "NODES", "SEESR", "SEESR_MODEL", "TILES_KEY", "SeeSRApply", "SeeSRLoader",
           "SeeSRTiledSampling"]
