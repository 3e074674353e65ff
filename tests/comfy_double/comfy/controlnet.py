"""Test double of ``comfy.controlnet``: the ``ControlBase`` contract a custom control implements (hint, strength,
percent range → sigma range in ``pre_run``, chaining through ``previous_controlnet``, ``copy_to``, ``control_merge``)
and ``broadcast_image_to``. No ControlNet model and no loader: those need ComfyUI's cldm (integration test)."""

from __future__ import annotations

from enum import Enum

import torch


def broadcast_image_to(tensor, target_batch_size, batched_number):
    """Batch ``tensor`` for a sample batch of ``target_batch_size`` made of ``batched_number`` equal chunks (cond,
    uncond, ...): batch 1 is returned as is, else the first ``per_chunk`` items (cycled) repeated per chunk."""
    if tensor.shape[0] == 1:
        return tensor
    per_chunk = target_batch_size // batched_number
    t = tensor[:per_chunk]
    if per_chunk > t.shape[0]:
        reps, rest = divmod(per_chunk, t.shape[0])
        t = torch.cat([t] * reps + [t[:rest]], dim=0)
    if t.shape[0] == target_batch_size:
        return t
    return torch.cat([t] * batched_number, dim=0)


class StrengthType(Enum):
    CONSTANT = 1
    LINEAR_UP = 2


class ControlBase:
    def __init__(self):
        self.cond_hint_original = None
        self.cond_hint = None
        self.strength = 1.0
        self.timestep_percent_range = (0.0, 1.0)
        self.latent_format = None
        self.vae = None
        self.global_average_pooling = False
        self.timestep_range = None
        self.compression_ratio = 8
        self.upscale_algorithm = "nearest-exact"
        self.extra_args = {}
        self.previous_controlnet = None
        self.extra_conds = []
        self.strength_type = StrengthType.CONSTANT
        self.concat_mask = False
        self.extra_concat_orig = []
        self.extra_concat = None
        self.extra_hooks = None
        self.preprocess_image = lambda a: a

    def set_cond_hint(self, cond_hint, strength=1.0, timestep_percent_range=(0.0, 1.0), vae=None, extra_concat=None):
        self.cond_hint_original = cond_hint
        self.strength = strength
        self.timestep_percent_range = timestep_percent_range
        if self.latent_format is not None:
            self.vae = vae
        self.extra_concat_orig = list(extra_concat or [])
        return self

    def pre_run(self, model, percent_to_timestep_function):
        start, end = self.timestep_percent_range
        self.timestep_range = (percent_to_timestep_function(start), percent_to_timestep_function(end))
        if self.previous_controlnet is not None:
            self.previous_controlnet.pre_run(model, percent_to_timestep_function)

    def set_previous_controlnet(self, controlnet):
        self.previous_controlnet = controlnet
        return self

    def cleanup(self):
        if self.previous_controlnet is not None:
            self.previous_controlnet.cleanup()
        self.cond_hint = None
        self.extra_concat = None
        self.timestep_range = None

    def get_models(self):
        return [] if self.previous_controlnet is None else self.previous_controlnet.get_models()

    def get_extra_hooks(self):
        out = [] if self.extra_hooks is None else [self.extra_hooks]
        if self.previous_controlnet is not None:
            out += self.previous_controlnet.get_extra_hooks()
        return out

    def copy_to(self, c):
        for name in ("cond_hint_original", "strength", "timestep_percent_range", "global_average_pooling",
                     "compression_ratio", "upscale_algorithm", "latent_format", "vae", "strength_type",
                     "concat_mask", "preprocess_image"):
            setattr(c, name, getattr(self, name))
        c.extra_args = dict(self.extra_args)
        c.extra_conds = list(self.extra_conds)
        c.extra_concat_orig = list(self.extra_concat_orig)
        c.extra_hooks = self.extra_hooks.clone() if self.extra_hooks else None

    def inference_memory_requirements(self, dtype):
        if self.previous_controlnet is not None:
            return self.previous_controlnet.inference_memory_requirements(dtype)
        return 0

    def control_merge(self, control, control_prev, output_dtype):
        """Scale this control's tensors by the strength (in place, once per shared tensor), cast, then add the
        previous control's entries index by index."""
        out = {"input": [], "middle": [], "output": []}
        for key, values in control.items():
            done = []
            for i, x in enumerate(values):
                if x is not None:
                    if self.global_average_pooling:
                        x = torch.mean(x, dim=(2, 3), keepdim=True).repeat(1, 1, x.shape[2], x.shape[3])
                    if not any(x is d for d in done):
                        done.append(x)
                        if self.strength_type == StrengthType.CONSTANT:
                            x *= self.strength
                        else:
                            x *= self.strength ** float(len(values) - i)
                    if output_dtype is not None and x.dtype != output_dtype:
                        x = x.to(output_dtype)
                out[key].append(x)
        if control_prev is not None:
            for key in ("input", "middle", "output"):
                o = out[key]
                for i, prev in enumerate(control_prev[key]):
                    if i >= len(o):
                        o.append(prev)
                    elif prev is not None:
                        o[i] = prev if o[i] is None else prev + o[i]
        return out

    def set_extra_arg(self, argument, value=None):
        self.extra_args[argument] = value
