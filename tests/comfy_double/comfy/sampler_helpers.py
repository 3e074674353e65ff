"""Test double of ``comfy.sampler_helpers``: ``prepare_sampling`` runs the ``PREPARE_SAMPLING`` wrappers with the
arguments newer cores pass (``force_full_load=``, ``force_offload=``) and loads the model and the conds' models
through the double's ``load_models_gpu`` with a memory estimate from the (possibly wrapped) noise shape."""

from __future__ import annotations

import comfy.model_management
import comfy.patcher_extension


def get_models_from_cond(cond, model_type):
    models = []
    for c in cond:
        if model_type in c:
            obj = c[model_type]
            models += obj.get_models() if hasattr(obj, "get_models") else [obj]
    return models


def estimate_memory(model, noise_shape, conds):
    n = 1
    for s in noise_shape:
        n *= int(s)
    return n * 4 * 64, n * 4 * 8


def prepare_sampling(model, noise_shape, conds, model_options=None, force_full_load=False, force_offload=False):
    executor = comfy.patcher_extension.WrapperExecutor.new_executor(
        _prepare_sampling,
        comfy.patcher_extension.get_all_wrappers(comfy.patcher_extension.WrappersMP.PREPARE_SAMPLING, model_options,
                                                 is_model_options=True))
    return executor.execute(model, noise_shape, conds, model_options=model_options, force_full_load=force_full_load,
                            force_offload=force_offload)


def _prepare_sampling(model, noise_shape, conds, model_options=None, force_full_load=False, force_offload=False):
    models = []
    for k in conds:
        models += get_models_from_cond(conds[k], "control")
    models += model.get_additional_models()
    memory_required = 1e20 if force_offload else estimate_memory(model, noise_shape, conds)[0]
    comfy.model_management.load_models_gpu([model] + models, memory_required=memory_required,
                                           force_full_load=force_full_load)
    return model.model, conds, models
