"""Test double of ``comfy.patcher_extension`` (the wrapper part): wrapper types, registration in a
``transformer_options`` dict and the executor that runs a wrapper chain (first registered = outermost)."""

from __future__ import annotations

from collections.abc import Callable


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict[str, dict[str, list[Callable]]]:
        return {}


def _options(transformer_options: dict, is_model_options: bool, create: bool) -> dict:
    if not is_model_options:
        return transformer_options
    if create:
        return transformer_options.setdefault("transformer_options", {})
    return transformer_options.get("transformer_options", {})


def add_wrapper_with_key(wrapper_type: str, key: str, wrapper: Callable, transformer_options: dict,
                         is_model_options=False):
    opts = _options(transformer_options, is_model_options, True)
    opts.setdefault("wrappers", {}).setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)


def add_wrapper(wrapper_type: str, wrapper: Callable, transformer_options: dict, is_model_options=False):
    add_wrapper_with_key(wrapper_type, None, wrapper, transformer_options, is_model_options)


def get_wrappers_with_key(wrapper_type: str, key: str, transformer_options: dict, is_model_options=False):
    opts = _options(transformer_options, is_model_options, False)
    return list(opts.get("wrappers", {}).get(wrapper_type, {}).get(key, []))


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options=False):
    opts = _options(transformer_options, is_model_options, False)
    out = []
    for group in opts.get("wrappers", {}).get(wrapper_type, {}).values():
        out += list(group)
    return out


class WrapperExecutor:
    """Calls ``wrappers[idx](executor, *args)``; calling the executor runs the next wrapper (or the original)."""

    def __init__(self, original: Callable, class_obj: object, wrappers: list[Callable], idx: int):
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx
        self.is_last = idx == len(self.wrappers)

    def __call__(self, *args, **kwargs):
        return self._create_next_executor().execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    def _create_next_executor(self) -> WrapperExecutor:
        if self.idx + 1 > len(self.wrappers):
            raise Exception("Wrapper idx exceeded available wrappers; something went very wrong.")  # noqa: TRY002
        return type(self)(self.original, self.class_obj, self.wrappers, self.idx + 1)

    @classmethod
    def new_executor(cls, original: Callable, wrappers: list[Callable], idx=0):
        return cls(original, class_obj=None, wrappers=wrappers, idx=idx)

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: object, wrappers: list[Callable], idx=0):
        return cls(original, class_obj, wrappers, idx=idx)
