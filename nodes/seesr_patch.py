"""SeeSR native, the model-patch part: loading SeeSR's additions under ComfyUI's memory manager, the RCA patch on
the user's SD-2 MODEL, and the checks that tie DAPE embeddings, latent rows and the MODEL together.

Loading follows core's own model patches (``comfy_extras/nodes_model_patch.py``: ``ModelPatchLoader``):
the RCA blocks (UNet's 16 + ControlNet's 7) are built with ``comfy.ops.manual_cast`` under
``comfy.model_patcher.CoreModelPatcher`` (``ModelPatcherDynamic`` where core enabled DynamicVRAM, else the legacy
patcher) and loaded strictly. Core reads and checks the file first (``load_native_parts``: shapes from the
release config, plain torch modules), so the check never depends on ``state_dict()`` of a module whose Linear
weights are created lazily (DynamicVRAM's ``comfy.ops``: ``weight=None`` until ``_lazy_load_from_state_dict``).
The ControlNet stays ComfyUI's own ``cldm`` ControlNet under core's own patcher (``load_controlnet_state_dict``).

The RCA patch is a ``DIFFUSION_MODEL`` wrapper that, for one UNet call, hangs a forward hook after each mapped
``SpatialTransformer``: the module tree and state dict stay untouched (LoRA, merges, FreeU, CheckpointSave keep
working) and it works on every core version (core's ``forward_timestep_embed_patch`` reaches SpatialTransformers
only in newer cores). DAPE embedding row ``i`` conditions latent row ``i`` in every cond/uncond chunk
(:func:`dape_rows`), as official SeeSR duplicates its image embeddings for the unconditional half.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import comfy.controlnet
import comfy.model_management as mm
import comfy.model_patcher
import torch

from ..core.arch import ModelDescriptor, Tiling
from ..core.dtypes import parse_dtype
from ..core.errors import InputError, StrictLoadError, WrongModelError
from ..core.seesr import NativeParts, RCASet, load_native_parts
from ..core.seesr.arch import memory as seesr_memory
from ..core.seesr.rca import broadcast_states
from . import common

log = logging.getLogger(__name__)

KEY = "aware_restore_seesr"              # wrapper / additional-models key
ARCH = "seesr"
TITLE = "SeeSR (native: RCA blocks + ControlNet)"


# ----------------------------------------------------------------------------------------------- core features
def core_patcher_class() -> type:
    """ComfyUI's current patcher class for new models (``CoreModelPatcher``: dynamic under DynamicVRAM), or the
    legacy ``ModelPatcher`` on cores that predate it."""
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def is_dynamic(patcher) -> bool:
    """Whether ``patcher`` loads weights dynamically (then tensors are assigned, not copied)."""
    fn = getattr(patcher, "is_dynamic", None)
    return bool(fn()) if callable(fn) else False


# ----------------------------------------------------------------------------------------------- model parts
class RCAModules(torch.nn.Module):
    """All RCA blocks of a SeeSR release (``unet.*`` and ``controlnet.*``) as one module under one patcher."""

    def __init__(self, unet: RCASet, controlnet: RCASet):
        super().__init__()
        self.unet = unet
        self.controlnet = controlnet


@dataclass(frozen=True)
class SeeSRNative:
    """What travels on SEESR_MODEL (``ModelPayload.descriptor.model``): the RCA blocks (``rca_patcher``, also the
    payload's patcher) and ComfyUI's ControlNet object (``control``, its model under core's own patcher)."""

    rca: RCAModules
    rca_patcher: comfy.model_patcher.ModelPatcher
    control: comfy.controlnet.ControlNet
    unet_config: dict
    controlnet_config: dict

    @property
    def context_dim(self) -> int:
        return self.rca.unet.entries[0].spec.context_dim

    @property
    def control_patcher(self):
        return self.control.control_model_wrapped

    @property
    def manual_cast_dtype(self) -> torch.dtype | None:
        return getattr(self.control, "manual_cast_dtype", None)

    def models(self) -> list:
        return [self.rca_patcher, self.control_patcher]


def _attention():
    """ComfyUI's attention for RCA blocks, in float32 precision like SD-2's own attention."""
    from comfy.ldm.modules.attention import optimized_attention

    return functools.partial(optimized_attention, attn_precision=torch.float32)


def _controlnet(ldm: dict[str, torch.Tensor], weight_dtype: torch.dtype | None, source: str):
    """ComfyUI's own ControlNet (and core's patcher for it) from the LDM-renamed SeeSR tensors, checked key for
    key after loading (weights are materialised then, dynamic or not)."""
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


def build_rca(parts: NativeParts, ops, attention, patcher_class: type, load_device, offload_device,
              source: str) -> tuple[RCAModules, object]:
    """The RCA blocks rebuilt with ComfyUI's ``ops`` under a ``patcher_class`` patcher, loaded strictly from the
    plain blocks core has checked against the release config (``parts``).

    The module is built on the meta device (nothing allocated; with lazy ``comfy.ops`` the Linear weights do not
    even exist yet) and every tensor is assigned — they are fresh copies already in the weight dtype, so
    assigning avoids a second copy, and it is what a dynamic patcher needs. Every missing or
    unexpected tensor by name whether or not the layers create their weights lazily (checked here, not by
    comparing with ``state_dict()`` of the unloaded module)."""
    expected = {f"unet.{k}": v for k, v in parts.unet_rca.state_dict().items()}
    expected.update({f"controlnet.{k}": v for k, v in parts.controlnet_rca.state_dict().items()})
    rca = RCAModules(RCASet(parts.unet_rca.entries, ops=ops, attention=attention, device="meta"),
                     RCASet(parts.controlnet_rca.entries, ops=ops, attention=attention, device="meta"))
    try:
        result = rca.load_state_dict(expected, strict=False, assign=True)
    except RuntimeError as exc:  # a shape or dtype that does not fit
        raise StrictLoadError(f"'{source}': the SeeSR RCA blocks do not fit the blocks built with ComfyUI's "
                              f"layers: {' '.join(str(exc).split())[:600]}") from None
    unset = [n for n, t in [*rca.named_parameters(), *rca.named_buffers()] if t.is_meta]
    missing = sorted({*result.missing_keys, *unset})
    unexpected = sorted(result.unexpected_keys)
    if missing or unexpected:
        raise StrictLoadError(f"'{source}': the SeeSR RCA blocks do not fit the blocks built with ComfyUI's "
                              f"layers: {len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:3]})")
    rca.eval().requires_grad_(False)
    patcher = patcher_class(rca, load_device=load_device, offload_device=offload_device)
    return rca, patcher


def load_native(folder, dtype_widget: str | None = "auto", name: str = "seesr") -> common.ModelPayload:
    """SEESR_MODEL payload of a release folder: the RCA blocks under ComfyUI's current patcher class, the
    ControlNet under core's own patcher."""
    import comfy.ops

    explicit = parse_dtype(dtype_widget or "auto")
    load_device, offload = mm.get_torch_device(), mm.unet_offload_device()
    rca_dtype = explicit or mm.unet_dtype(model_params=600_000_000,
                                          supported_dtypes=[torch.float16, torch.bfloat16, torch.float32])
    parts: NativeParts = load_native_parts(folder, dtype=rca_dtype, device=offload)  # plain torch, checked
    rca, rca_patcher = build_rca(parts, comfy.ops.manual_cast, _attention(), core_patcher_class(), load_device,
                                 offload, str(folder))
    net = _controlnet(parts.controlnet_ldm, explicit, str(folder))
    native = SeeSRNative(rca, rca_patcher, net, parts.unet_config, parts.controlnet_config)
    desc = ModelDescriptor(native, ARCH, TITLE, {"unet": parts.unet_config, "controlnet": parts.controlnet_config},
                           parts.source, tiling=Tiling.INTERNAL, memory=seesr_memory)
    return common.ModelPayload(rca_patcher, desc, name)


# ----------------------------------------------------------------------------------------------- rows
def chunk_count(transformer_options: dict | None) -> int:
    """How many equal chunks (cond, uncond, …) ComfyUI stacked into one model batch."""
    return max(len((transformer_options or {}).get("cond_or_uncond", ())), 1)


def dape_rows(states: torch.Tensor, batch: int, chunks: int, what: str = "dape_embeds",
              against: str = "latent_image") -> torch.Tensor:
    """Rows of ``states`` for a model batch of ``batch`` = ``chunks`` × latent batch (each chunk holds the latent
    rows in order): row ``i`` of every chunk gets row ``i`` of ``states``; one row is used for every latent row.
    Any other count is an error naming both sockets (never cycled or truncated)."""
    n = states.shape[0]
    if chunks < 1 or batch % chunks:
        raise InputError(f"SeeSR: a model batch of {batch} is not {chunks} equal cond/uncond chunks")
    per_chunk = batch // chunks
    if n == 1:
        return states.expand(batch, *states.shape[1:])
    if n != per_chunk:
        raise InputError(f"SeeSR: the '{what}' input holds {n} images but the '{against}' batch has {per_chunk}; "
                         f"give one per latent image (the same image batch through DAPE Tagger and SeeSR LR "
                         f"Embedding) or a single one for all")
    return states.repeat(chunks, *([1] * (states.dim() - 1))) if chunks > 1 else states


# ----------------------------------------------------------------------------------------------- RCA on the UNet
def rca_hook(block, states: torch.Tensor):
    def hook(module, args, output):
        return block(output, broadcast_states(states, output.shape[0]))
    return hook


class RCAPatch:
    """``DIFFUSION_MODEL`` wrapper ``(executor, x, timesteps, context, y, control, transformer_options, ...)``: RCA
    after each mapped SpatialTransformer for one UNet call; DAPE rows follow the latent rows (:func:`dape_rows`)."""

    def __init__(self, rca: RCASet, states: torch.Tensor):
        self.rca = rca
        self.states = states

    def __call__(self, executor, *args, **kwargs):
        unet = executor.class_obj
        x = args[0] if args else kwargs["x"]
        options = args[5] if len(args) > 5 else kwargs.get("transformer_options", {})
        states = dape_rows(self.states, x.shape[0], chunk_count(options)).to(x.device)
        handles = [unet.get_submodule(e.ldm_path).register_forward_hook(rca_hook(block, states))
                   for e, block in self.rca.blocks()]
        try:
            return executor(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()


# ----------------------------------------------------------------------------------------------- checks
def check_unet(model, rca: RCASet) -> None:
    """The MODEL must predict eps and have a SpatialTransformer of the RCA block's width at every mapped path."""
    model_type = getattr(getattr(model, "model", None), "model_type", None)
    if model_type is not None and getattr(model_type, "name", "EPS") != "EPS":
        raise WrongModelError(f"the 'model' input predicts {model_type.name}; SeeSR was trained on SD-2-base, an "
                              "eps-prediction model (SD-2.1-768 and other v-prediction models give noise). Load "
                              "SD-2-base (512-base-ema), SD-Turbo or the SeeSR release UNet.")
    unet = model.get_model_object("diffusion_model")
    found = {n: m for n, m in unet.named_modules() if type(m).__name__ == "SpatialTransformer"}
    wanted = {e.ldm_path: e.spec.channels for e in rca.entries}
    problems = [f"{p} (missing)" for p in wanted if p not in found]
    problems += [f"{p} ({getattr(found[p], 'in_channels', '?')} channels, RCA {c})" for p, c in wanted.items()
                 if p in found and getattr(found[p], "in_channels", c) != c]
    problems += [f"{p} (no RCA block for it)" for p in found if p not in wanted]
    if problems:
        raise WrongModelError(f"the 'model' input is not an SD-2-base-compatible UNet for this SeeSR model: "
                              f"{len(found)} SpatialTransformers vs {len(wanted)} RCA blocks; "
                              f"{'; '.join(problems[:4])}. Load SD-2-base (512-base-ema), SD-Turbo or the SeeSR "
                              "release UNet with Load Checkpoint / Load Diffusion Model.")


def check_embeds(states: torch.Tensor, native: SeeSRNative, image_batch: int) -> None:
    """DAPE embeddings ``[B, N, C]`` fit the SeeSR model (``C`` = the RCA context width) and the condition image
    batch (``B`` = its batch, or 1 for all); errors name the sockets."""
    if states.dim() != 3 or not states.shape[0] or not states.shape[1]:
        raise InputError(f"the 'dape_embeds' input must be [images, tokens, width] embeddings from DAPE Tagger; "
                         f"got shape {tuple(states.shape)}")
    if states.shape[-1] != native.context_dim:
        raise InputError(f"the 'dape_embeds' input is {states.shape[-1]} wide but the 'seesr_model' RCA blocks "
                         f"read {native.context_dim}-wide image embeddings: use the DAPE model of this SeeSR "
                         f"release (DAPE Tagger's embeddings)")
    if not torch.isfinite(states).all():
        raise InputError("the 'dape_embeds' input holds NaN or infinite values")
    n = states.shape[0]
    if n != 1 and image_batch != 1 and n != image_batch:
        raise InputError(f"the 'dape_embeds' input holds {n} images but the 'image' input has {image_batch}; "
                         f"give one per image (the same batch through DAPE Tagger and SeeSR LR Embedding) or a "
                         f"single one for all")
