"""Model-family detection from state-dict keys (spandrel-style), with errors that say what was expected.

Each family has a cheap ``detect`` predicate over the key set, the ComfyUI models folder its files live in,
and a ``keep`` filter that selects the inference weights (used by ``aware-restore convert``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FamilyInfo:
    name: str
    title: str
    folder: str
    detect: Callable[[frozenset[str]], bool]
    keep: Callable[[str], bool] = lambda key: True


def _any_prefix(keys: Iterable[str], *prefixes: str) -> bool:
    return any(k.startswith(prefixes) for k in keys)


def _daclip(keys: frozenset[str]) -> bool:
    return _any_prefix(keys, "visual_control.") and _any_prefix(keys, "clip.")


def _irsde(keys: frozenset[str]) -> bool:
    return "init_conv.weight" in keys and "final_conv.weight" in keys and _any_prefix(keys, "downs.")


def _ram(keys: frozenset[str]) -> bool:
    return "label_embed" in keys and _any_prefix(keys, "visual_encoder.") and not _dape(keys)


def _dape(keys: frozenset[str]) -> bool:
    return bool(keys) and all(k.endswith((".lora_A", ".lora_B")) for k in keys)


def _seesr_controlnet(keys: frozenset[str]) -> bool:
    return _any_prefix(keys, "controlnet_cond_embedding.") and any(".image_attentions." in k for k in keys)


def _seesr_unet(keys: frozenset[str]) -> bool:
    return ("conv_out.weight" in keys and _any_prefix(keys, "up_blocks.")
            and any(".image_attentions." in k for k in keys))


def _ssen(keys: frozenset[str]) -> bool:
    return _any_prefix(keys, "ssen.")


FAMILIES: dict[str, FamilyInfo] = {
    f.name: f
    for f in (
        FamilyInfo("daclip", "DA-CLIP", "daclip", _daclip,
                   keep=lambda k: k.startswith(("clip.", "visual_control.")) or k == "logit_scale"),
        FamilyInfo("irsde", "IR-SDE restoration network (DA-CLIP universal-ir / wild-ir)", "irsde", _irsde),
        FamilyInfo("ram", "RAM tagger (Swin-L)", "dape", _ram,
                   keep=lambda k: not k.startswith(("tag_encoder.", "text_decoder."))),
        FamilyInfo("dape", "DAPE LoRA (SeeSR)", "dape", _dape),
        FamilyInfo("seesr_unet", "SeeSR UNet", "seesr", _seesr_unet),
        FamilyInfo("seesr_controlnet", "SeeSR ControlNet", "seesr", _seesr_controlnet),
        FamilyInfo("ssen", "SSEN reference-based SR", "ssen", _ssen),
    )
}

# Files users commonly put in the wrong place: recognised only to make the error message precise.
_FOREIGN: tuple[tuple[str, Callable[[frozenset[str]], bool]], ...] = (
    ("a Stable Diffusion checkpoint", lambda k: _any_prefix(k, "model.diffusion_model.")),
    ("a plain CLIP / open_clip model", lambda k: _any_prefix(k, "visual.transformer.", "text_model.")),
    ("a diffusers UNet without SeeSR's image cross-attention",
     lambda k: "conv_in.weight" in k and _any_prefix(k, "down_blocks.")),
    ("a VAE", lambda k: _any_prefix(k, "encoder.down.", "first_stage_model.")),
)


class WrongModelError(ValueError):
    """A file of another model family was given where a specific family is required."""


def detect_family(sd: Mapping[str, torch.Tensor] | Iterable[str]) -> str | None:
    """Name of the family the keys belong to, or None."""
    keys = frozenset(sd.keys() if isinstance(sd, Mapping) else sd)
    for fam in FAMILIES.values():
        if fam.detect(keys):
            return fam.name
    return None


def describe(sd: Mapping[str, torch.Tensor] | Iterable[str]) -> str:
    """A human description of what the keys look like (for error messages and ``aware-restore info``)."""
    keys = frozenset(sd.keys() if isinstance(sd, Mapping) else sd)
    name = detect_family(keys)
    if name is not None:
        return FAMILIES[name].title
    for title, pred in _FOREIGN:
        if pred(keys):
            return title
    return "an unrecognised model"


def require_family(sd: Mapping[str, torch.Tensor], family: str | tuple[str, ...], source: str = "<state dict>",
                   folder: str | None = None) -> str:
    """Check that ``sd`` belongs to ``family`` (or one of several); return the detected name or raise."""
    wanted = (family,) if isinstance(family, str) else tuple(family)
    found = detect_family(sd)
    if found in wanted:
        return found
    titles = " or ".join(FAMILIES[w].title for w in wanted)
    folder = folder or FAMILIES[wanted[0]].folder
    sample = ", ".join(sorted(sd.keys())[:5])
    raise WrongModelError(
        f"'{source}' is not a {titles} checkpoint: it looks like {describe(sd)} "
        f"({len(sd)} tensors; first keys: {sample}). Put the {titles} file in the 'models/{folder}' folder "
        f"and select it there."
    )
