"""SeeSR's ControlNet as a conditioning control: ComfyUI's own ``cldm`` ControlNet (core's object and patcher) with
SeeSR's 7 RCA blocks hooked after its transformers, for any core sampler.

:class:`SeeSRControl` implements ``comfy.controlnet.ControlBase``'s contract (hint, strength, percent range,
chaining through ``previous_controlnet``, ``copy``, ``get_models``, ``cleanup``); it calls ``super().__init__()``
so the attributes newer cores add (``multigpu_clones``, ``cond_hints``, ``control_inputs``) exist, and it refuses
multi-GPU cloning with a clear error instead of the base class's ``NotImplementedError``. The hint is resized
once to 8× the whole latent, cropped per tile (``TILE_OPTION`` from the tiling wrapper, or core's
``spatial_crop_inputs`` protocol where a caller uses it), and its rows — like the DAPE rows — follow the latent
rows in every cond/uncond chunk (:func:`.seesr_patch.dape_rows`).
"""

from __future__ import annotations

import comfy.controlnet
import comfy.utils
import torch

from ..core.errors import InputError
from .seesr_patch import SeeSRNative, dape_rows, rca_hook
from .seesr_tiling import TILE_OPTION


def _check_aspect(hint: torch.Tensor, h: int, w: int) -> None:
    hh, hw = hint.shape[-2:]
    if abs(hh * w / hw - h) > 1 and abs(hw * h / hh - w) > 1:
        raise InputError(f"SeeSR: the 'image' input is {hw}×{hh} but the latent is {w * 8}×{h * 8} pixels (another "
                         "aspect ratio; it would be cropped): connect SeeSR LR Embedding's 'condition_image' with "
                         "its 'latent'")


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
        return super().get_models() + self.native.models()

    def deepclone_multigpu(self, load_device, autoregister=False, *args, **kwargs):
        raise InputError("SeeSR's ControlNet does not support multi-GPU sampling; sample on one device")

    def spatial_crop_inputs(self, *args, regions=None, source_width=None, source_height=None, target_width=None,
                            target_height=None, **kwargs):
        """Core's tile protocol: a copy whose hint is the pixel region ``(left, top, right, bottom)`` of the
        ``source_width × source_height`` canvas (one region; the copy resizes it to the tile like any hint)."""
        if not regions or len(regions) != 1 or not source_width or not source_height:
            raise InputError("SeeSR's ControlNet crops its hint for one region at a time")
        (left, top, right, bottom), = regions
        hint = self.cond_hint_original
        sy, sx = hint.shape[-2] / source_height, hint.shape[-1] / source_width
        c = self.copy()
        c.cond_hint_original = hint[..., round(top * sy):round(bottom * sy), round(left * sx):round(right * sx)]
        c.set_previous_controlnet(self.previous_controlnet)
        return c

    def pre_run(self, model, percent_to_timestep_function, *args, **kwargs):
        super().pre_run(model, percent_to_timestep_function, *args, **kwargs)
        self.model_sampling_current = model.model_sampling

    def cleanup(self, *args, **kwargs):
        self.model_sampling_current = None
        self._full = None
        self._hint_key = None
        super().cleanup(*args, **kwargs)

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
                _check_aspect(full, h, w)
                full = comfy.utils.common_upscale(full, w * r, h * r, self.upscale_algorithm, "center")
            self._full = ((h, w, x.device), full.to(x.device))
        crop = self._full[1][..., r * y0:r * (y0 + th), r * x0:r * (x0 + tw)].to(dtype)
        self.cond_hint = dape_rows(crop, x.shape[0], batched, what="image")
        self._hint_key = key
        return self.cond_hint

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options, *args, **kwargs):
        prev = None
        if self.previous_controlnet is not None:
            prev = self.previous_controlnet.get_control(x_noisy, t, cond, batched_number, transformer_options,
                                                        *args, **kwargs)
        if self.timestep_range is not None and (t[0] > self.timestep_range[0] or t[0] < self.timestep_range[1]):
            return prev
        rca = self.native.rca.controlnet
        net = self.native.control.control_model
        dtype = self.native.manual_cast_dtype or getattr(net, "dtype", None) or x_noisy.dtype
        hint = self._hint(x_noisy, (transformer_options or {}).get(TILE_OPTION), batched_number, dtype)
        states = dape_rows(self.states, x_noisy.shape[0], batched_number).to(x_noisy.device)
        ms = self.model_sampling_current
        timestep = ms.timestep(t)
        x = ms.calculate_input(t, x_noisy)
        context = cond.get("crossattn_controlnet", cond["c_crossattn"])
        handles = [net.get_submodule(e.ldm_path).register_forward_hook(rca_hook(block, states))
                   for e, block in rca.blocks()]
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
