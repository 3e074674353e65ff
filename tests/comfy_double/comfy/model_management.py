"""Test double of ``comfy.model_management``: a CPU-only device, recorded loads, interruption."""

from __future__ import annotations

import torch

OOM_EXCEPTION = torch.cuda.OutOfMemoryError
ACCELERATOR_ERROR = getattr(torch, "AcceleratorError", RuntimeError)
FORCE_FP32 = False

loaded_calls: list[dict] = []  # every load_models_gpu call, for assertions
_interrupted = False


class InterruptProcessingException(BaseException):
    """A BaseException (as in ComfyUI >= 0.4): ``except Exception`` does not swallow an interrupt."""


def is_oom(e):
    if isinstance(e, OOM_EXCEPTION):
        return True
    return isinstance(e, ACCELERATOR_ERROR) and (getattr(e, "error_code", None) == 2
                                                 or "out of memory" in str(e).lower())


def get_torch_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def text_encoder_device():
    return torch.device("cpu")


def vae_device():
    return torch.device("cpu")


def is_device_cpu(device) -> bool:
    return torch.device(device).type == "cpu"


def should_use_fp16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    if device is not None and is_device_cpu(device):
        return False
    return False


def should_use_bf16(device=None, model_params=0, prioritize_performance=True, manual_cast=False):
    if device is not None and is_device_cpu(device):
        return False
    return False


def vae_dtype(device=None, allowed_dtypes=[]):
    return torch.float32


def unet_dtype(device=None, model_params=0, supported_dtypes=[torch.float16, torch.bfloat16, torch.float32],
               weight_dtype=None):
    return torch.float32


def module_size(module) -> int:
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def free_memory(memory_required, device, keep_loaded=[], for_dynamic=False, pins_required=0, ram_required=0):
    return []


LOW_VRAM: int | None = None  # set by a test: weight bytes that fit on the load device (None: everything fits)
_left_behind: dict[int, list] = {}  # id(model) -> hooks of the modules a partial load left on the offload device


def _partial_load(model, budget: int) -> None:
    """ComfyUI's partial load (``ModelPatcher.load`` with a ``lowvram_model_memory`` budget): leaf modules, the
    largest first, go to the load device while they fit; the rest stay on the offload device, where only
    ``comfy.ops`` layers (``comfy_cast_weights``) cast their weights over at run time. A plain module left behind
    meets the device mismatch ComfyUI would give in its forward; this CPU-only double raises it from a hook."""
    leaves = [m for m in model.modules() if not list(m.children()) and list(m.parameters(recurse=False))]
    leaves.sort(key=lambda m: -sum(p.nelement() * p.element_size() for p in m.parameters(recurse=False)))
    used, hooks = 0, []
    for m in leaves:
        size = sum(p.nelement() * p.element_size() for p in m.parameters(recurse=False))
        if used + size <= budget or hasattr(m, "comfy_cast_weights"):
            used += size
            continue

        def mismatch(module, args):
            raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices "
                               f"(test double: this {type(module).__name__} was left on the offload device by a "
                               "partial load)")

        hooks.append(m.register_forward_pre_hook(mismatch))
    _left_behind[id(model)] = hooks


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    loaded_calls.append({"models": list(models), "memory_required": memory_required,
                         "force_full_load": force_full_load})
    for m in models:
        m.model.to(m.load_device)
        m.loaded = True
        for hook in _left_behind.pop(id(m.model), []):
            hook.remove()
        if LOW_VRAM is not None and not force_full_load:
            _partial_load(m.model, LOW_VRAM)


def load_model_gpu(model):
    return load_models_gpu([model])


def soft_empty_cache(force=False):
    pass


def interrupt_current_processing(value=True):
    global _interrupted
    _interrupted = value


def processing_interrupted():
    return _interrupted


def throw_exception_if_processing_interrupted():
    global _interrupted
    if _interrupted:
        _interrupted = False
        raise InterruptProcessingException()
