"""Test double of ``comfy.model_patcher.ModelPatcher`` (bookkeeping only)."""

from __future__ import annotations

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
        self.model_options = {"transformer_options": {}}
        self.patches_uuid = uuid.uuid4()
        self.loaded = False
        self.model_size()

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = sum(t.nelement() * t.element_size() for t in self.model.state_dict().values())
        return self.size

    def loaded_size(self):
        return self.size if self.loaded else 0

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.weight_inplace_update)
        n.patches = dict(self.patches)
        n.model_options = dict(self.model_options)
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def get_model_object(self, name):
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj
