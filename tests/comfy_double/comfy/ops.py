"""Test double of ``comfy.ops``: ``disable_weight_init`` / ``manual_cast`` layer classes. While
``comfy.memory_management.aimdo_enabled`` is on, ``Linear`` starts with ``weight=None`` / ``bias=None`` and gets them
in ``_load_from_state_dict`` (ComfyUI's DynamicVRAM behaviour), so ``state_dict()`` of an unloaded module lacks
them."""

from __future__ import annotations

import torch

import comfy.memory_management


def _lazy_load(module, state_dict, prefix, missing_keys, unexpected_keys, assign, has_bias):
    for k, v in state_dict.items():
        key = k[len(prefix):]
        if key == "weight":
            module.weight = torch.nn.Parameter(v if assign else v.clone(), requires_grad=False)
        elif key == "bias" and has_bias:
            module.bias = torch.nn.Parameter(v if assign else v.clone(), requires_grad=False)
        else:
            unexpected_keys.append(k)
    if module.weight is None:
        missing_keys.append(prefix + "weight")
    if has_bias and module.bias is None:
        missing_keys.append(prefix + "bias")


class _NoInit:
    """What ComfyUI's ``disable_weight_init`` layers share: no cast, no random init (weights come from a file)."""

    comfy_cast_weights = False

    def reset_parameters(self):
        return None


class disable_weight_init:
    class Linear(torch.nn.Linear):
        comfy_cast_weights = False

        def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
            if not comfy.memory_management.aimdo_enabled:
                super().__init__(in_features, out_features, bias, device, dtype)
                return
            torch.nn.Module.__init__(self)
            self.in_features, self.out_features = in_features, out_features
            self.weight = None
            self.bias = None
            self.comfy_need_lazy_init_bias = bias

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                  error_msgs):
            if not comfy.memory_management.aimdo_enabled:
                return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                                     unexpected_keys, error_msgs)
            _lazy_load(self, state_dict, prefix, missing_keys, unexpected_keys,
                       local_metadata.get("assign_to_params_buffers", False),
                       getattr(self, "comfy_need_lazy_init_bias", False))

        def reset_parameters(self):
            return None

    class Conv2d(_NoInit, torch.nn.Conv2d):
        pass

    class GroupNorm(_NoInit, torch.nn.GroupNorm):
        pass

    class LayerNorm(_NoInit, torch.nn.LayerNorm):
        pass


class manual_cast(disable_weight_init):
    class Linear(disable_weight_init.Linear):
        comfy_cast_weights = True

    class Conv2d(disable_weight_init.Conv2d):
        comfy_cast_weights = True

    class GroupNorm(disable_weight_init.GroupNorm):
        comfy_cast_weights = True

    class LayerNorm(disable_weight_init.LayerNorm):
        comfy_cast_weights = True
