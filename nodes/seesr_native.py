"""SeeSR native in ComfyUI: the user's SD-2 MODEL (CheckpointLoaderSimple / UNETLoader) patched with SeeSR's RCA
blocks, SeeSR's ControlNet attached to the conditioning, sampled by any core sampler.

* **Load SeeSR** reads only what the native path needs from the release folder (core ``load_native_parts``): the
  UNet's 16 RCA blocks and the ControlNet. The ControlNet is ComfyUI's own ``cldm`` ControlNet (built by
  ``comfy.controlnet.load_controlnet_state_dict`` from the LDM-renamed tensors: ComfyUI's ops, dtype choice,
  attention and lowvram), plus its 7 RCA blocks. Every RCA block is the pack's one implementation
  (``core/seesr/rca.py``) built with ``comfy.ops.manual_cast`` and ComfyUI's ``optimized_attention``.
* **SeeSR Apply** clones the MODEL and adds a ``DIFFUSION_MODEL`` wrapper that, for the duration of one UNet call,
  hangs a forward hook after each of the UNet's ``SpatialTransformer``\\ s (RCA block on its output, reading the DAPE
  states). The module tree and state dict stay untouched, so LoRA, merges, FreeU, attention patches and
  CheckpointSave keep working; the RCA weights are registered with ``set_additional_models`` so the memory
  manager loads them with the UNet. The ControlNet is a ``ControlBase`` (:class:`SeeSRControl`), one instance per
  previous control shared by positive and negative (so cond and uncond stay batched), chained like core
  *Apply ControlNet*.
* **SeeSR Tiled Sampling** adds SeeSR's latent tiling as a ``CALC_COND_BATCH`` wrapper: every model call runs per
  latent tile (official Gaussian weights, ``core/seesr/tiles.py``), so every core sampler is tiled; the tile
  position travels in ``transformer_options`` for :class:`SeeSRControl` to crop its hint.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import comfy.controlnet
import comfy.model_management as mm
import comfy.model_patcher
import comfy.patcher_extension
import comfy.utils
import torch
from comfy_api.latest import io

from ..core.arch import ModelDescriptor, Tiling
from ..core.dtypes import parse_dtype
from ..core.errors import InputError, StrictLoadError, WrongModelError
from ..core.ram import DapeEmbeds
from ..core.seesr import NativeParts, RCASet, latent_grid, load_native_parts
from ..core.seesr.arch import memory as seesr_memory
from ..core.seesr.rca import broadcast_states
from ..core.seesr.tiles import DEFAULT_OVERLAP, DEFAULT_TILE, blend_latent_tiles
from . import common
from .dape import DAPE_EMBEDS

log = logging.getLogger(__name__)

SEESR_MODEL = io.Custom("SEESR_MODEL")
FOLDER = "seesr"
CATEGORY = f"{common.CATEGORY}/SeeSR"
KEY = "aware_restore_seesr"              # wrapper / additional-models key
TILES_KEY = "aware_restore_seesr_tiles"
TILE_OPTION = "aware_restore_seesr_tile"  # transformer_options entry: (y, x, th, tw, H, W) of the current tile
ARCH = "seesr"
TITLE = "SeeSR (native: RCA blocks + ControlNet)"


# ----------------------------------------------------------------------------------------------- model parts
class ControlHolder(torch.nn.Module):
    """ComfyUI's cldm ControlNet and its RCA blocks as one module, so they load and offload together."""

    def __init__(self, control: torch.nn.Module, rca: RCASet):
        super().__init__()
        self.control = control
        self.rca = rca


@dataclass(frozen=True)
class SeeSRNative:
    """What travels on SEESR_MODEL (``ModelPayload.descriptor.model``): the UNet's RCA blocks (under the payload's
    patcher) and the ControlNet + its RCA blocks under ``control_patcher``."""

    unet_rca: RCASet
    control_patcher: comfy.model_patcher.ModelPatcher
    manual_cast_dtype: torch.dtype | None
    unet_config: dict
    controlnet_config: dict

    @property
    def holder(self) -> ControlHolder:
        return self.control_patcher.model


def _attention():
    """ComfyUI's attention for RCA blocks, in float32 precision like SD-2's own attention."""
    from comfy.ldm.modules.attention import optimized_attention

    return functools.partial(optimized_attention, attn_precision=torch.float32)


def _controlnet(ldm: dict[str, torch.Tensor], weight_dtype: torch.dtype | None, source: str):
    """ComfyUI's own ControlNet from the LDM-renamed SeeSR tensors, checked key for key."""
    options = {} if weight_dtype is None else {"dtype": weight_dtype}
    net = comfy.controlnet.load_controlnet_state_dict(dict(ldm), model_options=options)
    if not isinstance(net, comfy.controlnet.ControlNet):
        raise WrongModelError(f"'{source}': ComfyUI did not read the SeeSR ControlNet as an SD ControlNet "
                              f"(got {type(net).__name__})")
    own = net.control_model.state_dict()
    missing, unexpected = sorted(set(own) - set(ldm)), sorted(set(ldm) - set(own))
    if missing or unexpected:
        raise StrictLoadError(f"'{source}': the SeeSR ControlNet does not fit ComfyUI's ControlNet built from its "
                              f"shapes: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:3]})")
    return net


def load_native(folder, dtype_widget: str | None = "auto", name: str = "seesr") -> common.ModelPayload:
    """SEESR_MODEL payload of a release folder (RCA blocks + ComfyUI ControlNet under the memory manager)."""
    import comfy.ops

    explicit = parse_dtype(dtype_widget or "auto")
    load_device, offload = mm.get_torch_device(), mm.unet_offload_device()
    rca_dtype = explicit or mm.unet_dtype(model_params=600_000_000,
                                          supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    parts: NativeParts = load_native_parts(folder, dtype=rca_dtype, device=offload, ops=comfy.ops.manual_cast,
                                           attention=_attention())
    net = _controlnet(parts.controlnet_ldm, explicit, str(folder))
    holder = ControlHolder(net.control_model, parts.controlnet_rca).eval().requires_grad_(False)
    control_patcher = comfy.model_patcher.ModelPatcher(holder, load_device=load_device, offload_device=offload)
    parts.unet_rca.eval().requires_grad_(False)
    rca_patcher = comfy.model_patcher.ModelPatcher(parts.unet_rca, load_device=load_device, offload_device=offload)
    native = SeeSRNative(parts.unet_rca, control_patcher, net.manual_cast_dtype, parts.unet_config,
                         parts.controlnet_config)
    desc = ModelDescriptor(native, ARCH, TITLE, {"unet": parts.unet_config, "controlnet": parts.controlnet_config},
                           parts.source, tiling=Tiling.INTERNAL, memory=seesr_memory)
    return common.ModelPayload(rca_patcher, desc, name)


# ----------------------------------------------------------------------------------------------- RCA on the UNet
def _rca_hook(block, states: torch.Tensor):
    def hook(module, args, output):
        return block(output, broadcast_states(states, output.shape[0]))
    return hook


class RCAPatch:
    """``DIFFUSION_MODEL`` wrapper: RCA after each mapped SpatialTransformer, for one UNet call only."""

    def __init__(self, rca: RCASet, states: torch.Tensor):
        self.rca = rca
        self.states = states

    def __call__(self, executor, *args, **kwargs):
        unet = executor.class_obj
        x = args[0] if args else kwargs["x"]
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        chunks = max(len(options.get("cond_or_uncond", ())), 1)
        states = comfy.controlnet.broadcast_image_to(self.states.to(x.device), x.shape[0], chunks)
        handles = [unet.get_submodule(e.ldm_path).register_forward_hook(_rca_hook(block, states))
                   for e, block in self.rca.blocks()]
        try:
            return executor(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()


def check_unet(model, rca: RCASet) -> None:
    """The MODEL's UNet must have a SpatialTransformer of the RCA block's width at every mapped path, and no others."""
    unet = model.get_model_object("diffusion_model")
    found = {n: m for n, m in unet.named_modules() if type(m).__name__ == "SpatialTransformer"}
    wanted = {e.ldm_path: e.spec.channels for e in rca.entries}
    problems = [f"{p} (missing)" for p in wanted if p not in found]
    problems += [f"{p} ({getattr(found[p], 'in_channels', '?')} channels, RCA {c})" for p, c in wanted.items()
                 if p in found and getattr(found[p], "in_channels", c) != c]
    problems += [f"{p} (no RCA block for it)" for p in found if p not in wanted]
    if problems:
        raise WrongModelError(f"the MODEL is not an SD-2-base-compatible UNet for this SeeSR model: "
                              f"{len(found)} SpatialTransformers vs {len(wanted)} RCA blocks; "
                              f"{'; '.join(problems[:4])}. Load SD-2-base (512-base-ema), SD-Turbo or the SeeSR "
                              "release UNet with Load Checkpoint / Load Diffusion Model.")
    model_type = getattr(getattr(model, "model", None), "model_type", None)
    if model_type is not None and getattr(model_type, "name", "EPS") != "EPS":
        log.warning("SeeSR: the MODEL predicts %s; SeeSR was trained on SD-2-base (eps prediction)", model_type.name)


# ----------------------------------------------------------------------------------------------- ControlNet
class SeeSRControl(comfy.controlnet.ControlBase):
    """SeeSR's ControlNet (ComfyUI cldm + RCA) as a conditioning control: residuals for any sampler."""

    def __init__(self, native: SeeSRNative, states: torch.Tensor):
        super().__init__()
        self.native = native
        self.states = states
        self.model_sampling_current = None
        self.upscale_algorithm = "bicubic"
        self._full = None  # (key, resized hint)
        self._hint_key = None

    def copy(self):
        c = SeeSRControl(self.native, self.states)
        self.copy_to(c)
        c.upscale_algorithm = self.upscale_algorithm
        return c

    def get_models(self):
        return super().get_models() + [self.native.control_patcher]

    def pre_run(self, model, percent_to_timestep_function):
        super().pre_run(model, percent_to_timestep_function)
        self.model_sampling_current = model.model_sampling

    def cleanup(self):
        self.model_sampling_current = None
        self._full = None
        self._hint_key = None
        super().cleanup()

    def _hint(self, x: torch.Tensor, tile, batched: int, dtype: torch.dtype) -> torch.Tensor:
        if tile is None:
            y0, x0, (th, tw), (h, w) = 0, 0, x.shape[-2:], x.shape[-2:]
        else:
            y0, x0, th, tw, h, w = tile
        key = (y0, x0, th, tw, h, w, x.shape[0], batched, dtype, x.device)
        if self.cond_hint is not None and self._hint_key == key:
            return self.cond_hint
        r = self.compression_ratio
        if self._full is None or self._full[0] != (h, w, x.device):
            full = self.cond_hint_original
            if tuple(full.shape[-2:]) != (h * r, w * r):
                full = comfy.utils.common_upscale(full, w * r, h * r, self.upscale_algorithm, "center")
            self._full = ((h, w, x.device), full.to(x.device))
        crop = self._full[1][..., r * y0:r * (y0 + th), r * x0:r * (x0 + tw)].to(dtype)
        self.cond_hint = comfy.controlnet.broadcast_image_to(crop, x.shape[0], batched)
        self._hint_key = key
        return self.cond_hint

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        prev = None
        if self.previous_controlnet is not None:
            prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return prev
        holder = self.native.holder
        net = holder.control
        dtype = self.native.manual_cast_dtype or getattr(net, "dtype", None) or x_noisy.dtype
        hint = self._hint(x_noisy, transformer_options.get(TILE_OPTION), batched_number, dtype)
        states = comfy.controlnet.broadcast_image_to(self.states.to(x_noisy.device), x_noisy.shape[0], batched_number)
        ms = self.model_sampling_current
        timestep = ms.timestep(t)
        x = ms.calculate_input(t, x_noisy)
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        handles = [net.get_submodule(e.ldm_path).register_forward_hook(_rca_hook(block, states))
                   for e, block in holder.rca.blocks()]
        try:
            control = net(x=x.to(dtype), hint=hint, timesteps=timestep.to(dtype),
                          context=context.to(device=x_noisy.device, dtype=dtype))
        finally:
            for h in handles:
                h.remove()
        return self.control_merge(control, prev, output_dtype=None)


def attach_control(conditioning: list, control: SeeSRControl, strength: float, start: float, end: float,
                   hint: torch.Tensor, shared: dict[int, SeeSRControl]) -> list:
    """``conditioning`` with ``control`` set on every entry: one copy per previous control (``shared`` is kept
    across positive and negative so both get the same objects and batch together)."""
    out = []
    for tensor, extra in conditioning:
        d = dict(extra)
        prev = d.get("control")
        c = shared.get(id(prev))
        if c is None:
            c = control.copy().set_cond_hint(hint, strength, (start, end))
            c.set_previous_controlnet(prev)
            shared[id(prev)] = c
        d["control"] = c
        d["control_apply_to_uncond"] = False
        out.append([tensor, d])
    return out


# ----------------------------------------------------------------------------------------------- tiling
def _check_tiled_conds(conds) -> None:
    for group in conds:
        for c in group or ():
            if "area" in c or "mask" in c:
                raise InputError("SeeSR tiled sampling does not support area or mask conditioning (each tile "
                                 "would see the area of the whole latent); remove the tiling or the area/mask")
            ctrl = c.get("control")
            while ctrl is not None:
                if not isinstance(ctrl, SeeSRControl):
                    raise InputError(f"SeeSR tiled sampling supports only SeeSR's ControlNet, not "
                                     f"{type(ctrl).__name__} (it would squash its whole hint into each tile)")
                ctrl = ctrl.previous_controlnet


class SeeSRTiles:
    """``CALC_COND_BATCH`` wrapper: SeeSR's latent tiles (official grid and Gaussian weights) per model call."""

    def __init__(self, tile: int, overlap: int):
        self.tile, self.overlap = int(tile), int(overlap)

    def grid(self, h: int, w: int):
        return latent_grid(h, w, self.tile, self.overlap)

    def __call__(self, executor, model, conds, x_in, timestep, model_options):
        h, w = x_in.shape[-2:]
        g = self.grid(h, w)
        if g.whole:
            return executor(model, conds, x_in, timestep, model_options)
        _check_tiled_conds(conds)

        def run(origins):
            (y, x), = origins
            mm.throw_exception_if_processing_interrupted()
            options = dict(model_options)
            options["transformer_options"] = dict(model_options.get("transformer_options", {}))
            options["transformer_options"][TILE_OPTION] = (y, x, g.th, g.tw, h, w)
            return [executor(model, conds, x_in[..., y:y + g.th, x:x + g.tw], timestep, options)]

        return [o.to(x_in.dtype) for o in blend_latent_tiles(run, g, x_in.device)]


class TiledMemory:
    """``PREPARE_SAMPLING`` wrapper: the memory estimate for one tile instead of the whole latent."""

    def __init__(self, tiles: SeeSRTiles):
        self.tiles = tiles

    def __call__(self, executor, model, noise_shape, conds, model_options=None):
        shape = list(noise_shape)
        g = self.tiles.grid(shape[-2], shape[-1])
        if not g.whole:
            shape[-2:] = [g.th, g.tw]
        return executor(model, shape, conds, model_options=model_options)


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
                io.Combo.Input("dtype", options=common.DTYPE_OPTIONS, default="auto",
                               tooltip="Weight dtype of the RCA blocks and the ControlNet: auto = ComfyUI's choice "
                                       "for the device (as for a diffusion model); computation follows the MODEL."),
            ],
            outputs=[SEESR_MODEL.Output(display_name="seesr_model",
                                        tooltip="SeeSR's RCA blocks and ControlNet, for SeeSR Apply.")])

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
                        "VAE-encoded LR image (SeeSR LR Embedding).",
            inputs=[
                io.Model.Input("model", tooltip="SD-2-base-compatible MODEL (Load Checkpoint: 512-base-ema, SD-Turbo; "
                                                "or the SeeSR release UNet via Load Diffusion Model). LoRA/FreeU may "
                                                "come before or after."),
                io.Conditioning.Input("positive", tooltip="CLIP Text Encode (SD-2 CLIP) of SeeSR Prompt 'positive'."),
                io.Conditioning.Input("negative", tooltip="CLIP Text Encode (SD-2 CLIP) of SeeSR Prompt 'negative'."),
                SEESR_MODEL.Input("seesr_model", tooltip="From Load SeeSR."),
                DAPE_EMBEDS.Input("dape_embeds", tooltip="DAPE Tagger embeddings of the LR image (one per image, or "
                                                         "one for all)."),
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
        payload = common.expect_model(seesr_model, "seesr_model", "SEESR_MODEL", "Load SeeSR", ARCH)
        native: SeeSRNative = payload.descriptor.model
        emb = common.expect(dape_embeds, DapeEmbeds, "dape_embeds", "DAPE_EMBEDS", "DAPE Tagger")
        if start_percent > end_percent:
            raise InputError(f"start_percent {start_percent} is after end_percent {end_percent}")
        check_unet(model, native.unet_rca)
        states = emb.embeds.detach().float().cpu()
        m = model.clone()
        m.set_additional_models(KEY, [payload.patcher])
        m.remove_wrappers_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY)
        m.add_wrapper_with_key(comfy.patcher_extension.WrappersMP.DIFFUSION_MODEL, KEY,
                               RCAPatch(native.unet_rca, states))
        hint, _ = common.image_to_bchw(image)
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
                             tooltip="Latent tile side (×8 pixels). Official: 96."),
                io.Int.Input("tile_overlap", default=DEFAULT_OVERLAP, min=0, max=256, step=4,
                             tooltip="Tile overlap in latent pixels (at most half the tile). Official: 4; 32 hides "
                                     "the seams."),
            ],
            outputs=[io.Model.Output(display_name="model", tooltip="The MODEL with tiled model calls.")])

    @classmethod
    def execute(cls, model, tile_size=DEFAULT_TILE, tile_overlap=DEFAULT_OVERLAP) -> io.NodeOutput:
        tiles = SeeSRTiles(tile_size, tile_overlap)
        m = model.clone()
        WMP = comfy.patcher_extension.WrappersMP
        m.remove_wrappers_with_key(WMP.CALC_COND_BATCH, TILES_KEY)
        m.remove_wrappers_with_key(WMP.PREPARE_SAMPLING, TILES_KEY)
        m.add_wrapper_with_key(WMP.CALC_COND_BATCH, TILES_KEY, tiles)
        m.add_wrapper_with_key(WMP.PREPARE_SAMPLING, TILES_KEY, TiledMemory(tiles))
        return io.NodeOutput(m)


NODES: list[type[io.ComfyNode]] = [SeeSRLoader, SeeSRApply, SeeSRTiledSampling]
__all__ = ["NODES", "RCAPatch", "SeeSRControl", "SeeSRNative", "SeeSRTiles", "TiledMemory", "attach_control",
           "check_unet", "load_native"]
