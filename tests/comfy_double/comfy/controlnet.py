"""Test double of ``comfy.controlnet``: the ``ControlBase`` contract a custom control implements (hint, strength,
percent range → sigma range in ``pre_run``, chaining through ``previous_controlnet``, ``copy_to``, ``control_merge``,
the multi-GPU clone bookkeeping of newer cores) and ``broadcast_image_to``; ``ControlNet`` only as the holder of a
control model under core's patcher (``control_model_wrapped``). No cldm and no loader: those need ComfyUI
(integration test)."""

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
        self.multigpu_clones = {}

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
        for device_cnet in self.multigpu_clones.values():
            prev, device_cnet.previous_controlnet = device_cnet.previous_controlnet, None
            try:
                device_cnet.cleanup()
            finally:
                device_cnet.previous_controlnet = prev
        self.cond_hint = None
        self.extra_concat = None
        self.timestep_range = None

    def get_models(self):
        out = []
        for device_cnet in self.multigpu_clones.values():
            out += device_cnet.get_models_only_self()
        if self.previous_controlnet is not None:
            out += self.previous_controlnet.get_models()
        return out

    def get_models_only_self(self):
        prev, self.previous_controlnet = self.previous_controlnet, None
        try:
            return self.get_models()
        finally:
            self.previous_controlnet = prev

    def get_instance_for_device(self, device):
        return self.multigpu_clones.get(device, self)

    def deepclone_multigpu(self, load_device, autoregister=False):
        raise NotImplementedError("Classes inheriting from ControlBase should define their own deepclone_multigpu")

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


class ControlNet(ControlBase):
    """Core's SD ControlNet object reduced to what the pack reads: the control model, core's patcher for it and the
    compute dtype."""

    def __init__(self, control_model=None, global_average_pooling=False, compression_ratio=8, latent_format=None,
                 load_device=None, manual_cast_dtype=None, extra_conds=None, strength_type=StrengthType.CONSTANT,
                 concat_mask=False, preprocess_image=lambda a: a):
        super().__init__()
        import comfy.model_patcher

        self.control_model = control_model
        self.load_device = load_device
        if control_model is not None:
            self.control_model_wrapped = comfy.model_patcher.CoreModelPatcher(
                control_model, load_device=load_device, offload_device=torch.device("cpu"))
        self.compression_ratio = compression_ratio
        self.global_average_pooling = global_average_pooling
        self.model_sampling_current = None
        self.manual_cast_dtype = manual_cast_dtype
        self.latent_format = latent_format
        self.extra_conds += list(extra_conds or ["y"])
        self.strength_type = strength_type
        self.concat_mask = concat_mask
        self.preprocess_image = preprocess_image
