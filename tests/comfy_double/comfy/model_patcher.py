"""Test double of ``comfy.model_patcher.ModelPatcher``: bookkeeping (size, load state), ``clone`` semantics
(shared module, copied patch lists, deep-copied ``model_options``, cloned additional models, copied wrapper lists),
wrappers and additional models as ComfyUI registers them. No weight patching."""

from __future__ import annotations

import copy
import uuid


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.size = size
        self.model = model
        if not hasattr(self.model, "device"):
            self.model.device = offload_device
        self.load_device = load_device
        self.offload_device = offload_device
        self.weight_inplace_update = weight_inplace_update
        self.patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.patches_uuid = uuid.uuid4()
        self.additional_models = {}
        self.wrappers = {}
        self.callbacks = {}
        self.parent = None
        self.loaded = False
        self.model_size()

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())
        return self.size

    def loaded_size(self):
        return self.size if self.loaded else 0

    def is_dynamic(self):
        return False

    def clone(self, disable_dynamic=False, model_override=None, force_deepcopy=False):
        n = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                           weight_inplace_update=self.weight_inplace_update)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.patches_uuid = self.patches_uuid
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.parent = self
        n.additional_models = {k: [m.clone() for m in ms] for k, ms in self.additional_models.items()}
        n.callbacks = {k: {k1: list(c1) for k1, c1 in c.items()} for k, c in self.callbacks.items()}
        n.wrappers = {k: {k1: list(w1) for k1, w1 in w.items()} for k, w in self.wrappers.items()}
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def get_model_object(self, name):
        if name in self.object_patches:
            return self.object_patches[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    # wrappers ------------------------------------------------------------------------------------------------
    def add_wrapper(self, wrapper_type, wrapper):
        self.add_wrapper_with_key(wrapper_type, None, wrapper)

    def add_wrapper_with_key(self, wrapper_type, key, wrapper):
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type, key):
        w = self.wrappers.get(wrapper_type, {})
        if key in w:
            w.pop(key)

    def get_wrappers(self, wrapper_type, key):
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def get_all_wrappers(self, wrapper_type):
        out = []
        for w in self.wrappers.get(wrapper_type, {}).values():
            out += w
        return out

    # additional models ---------------------------------------------------------------------------------------
    def set_additional_models(self, key, models):
        self.additional_models[key] = models

    def remove_additional_models(self, key):
        self.additional_models.pop(key, None)

    def get_additional_models_with_key(self, key):
        return self.additional_models.get(key, [])

    def get_additional_models(self):
        out = []
        for models in self.additional_models.values():
            out += models
        return out


CoreModelPatcher = ModelPatcher  # ModelPatcherDynamic under DynamicVRAM on a GPU; the legacy patcher on CPU
