"""The architecture contract, once for every family (spandrel's generic round-trip test):

* every architecture detects its own state dicts and no other architecture does;
* ``load`` builds the model from the shapes alone (plus the documented non-shape options), loads it strictly and
  returns a descriptor whose config is what the builder used and whose weights are the file's;
* the real-size key lists load strictly on the meta device;
* a file of another family is refused with an error naming the expected model and its folder;
* the descriptor states dtypes, tiling and a memory estimate.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from aware_restore.core import registry
from aware_restore.core.arch import ModelDescriptor, Tiling
from aware_restore.core.checkpoint import meta_state_dict_from_key_list
from aware_restore.core.errors import ModelLoadError, StrictLoadError, WrongModelError
from kit.contract import REAL_KEY_LISTS, cases

FIX = Path(__file__).resolve().parent / "fixtures"
DATA = Path(__file__).resolve().parent.parent / "core" / "seesr" / "data"
CASES = list(cases())
IDS = [f"{a}-{label}" for a, label, *_ in CASES]


def test_registry_lists_every_family_once():
    ids = [a.id for a in registry.architectures()]
    assert ids == sorted(set(ids), key=ids.index)
    assert {"daclip", "irsde", "ram", "dape", "seesr_unet", "seesr_controlnet", "ssen"} == set(ids)
    assert {a.id for a in registry.architectures() if a.kind == "adapter"} == {"dape"}
    covered = {a for a, *_ in CASES}
    assert covered == set(ids), "every architecture needs random cases in tests/kit/contract.py"


@pytest.mark.parametrize(("arch_id", "label", "sd", "options", "expected"), CASES, ids=IDS)
def test_detect_and_strict_round_trip(arch_id, label, sd, options, expected):
    arch = registry.get(arch_id)
    assert registry.detect_family(sd) == arch_id
    others = [a.id for a in registry.architectures() if a.id != arch_id and a.detect(frozenset(sd))]
    assert not others, f"{others} also claim a {arch_id} state dict"
    desc = arch.load(sd, **options)
    assert isinstance(desc, ModelDescriptor) and desc.arch == arch_id and isinstance(desc.tiling, Tiling)
    if expected is not None:
        assert desc.config == expected
    if arch.kind == "adapter":
        assert set(desc.model) == set(sd)
        return
    kept = {k: v for k, v in sd.items() if arch.keep(k)}
    own = desc.model.state_dict()
    missing = set(kept) - set(own)
    assert not missing, f"{len(missing)} file tensors are not in the loaded model"
    assert all(torch.equal(own[k].float(), kept[k].float()) for k in kept)
    assert not desc.model.training and not any(p.requires_grad for p in desc.model.parameters())
    assert torch.float32 in desc.dtypes and desc.memory_for(2, (64, 48)) > desc.memory_for(1, (32, 24)) >= 0
    # the same tensors loaded in bf16 keep the architecture
    half = arch.load(sd, dtype=torch.bfloat16, **options)
    assert half.dtype == torch.bfloat16 and half.config == desc.config


@pytest.mark.parametrize(("arch_id", "label", "sd", "options", "expected"),
                         [c for c in CASES if registry.get(c[0]).kind == "model"],
                         ids=[i for i, c in zip(IDS, CASES) if registry.get(c[0]).kind == "model"])
def test_broken_state_dicts_are_clear_errors(arch_id, label, sd, options, expected):
    arch = registry.get(arch_id)
    key = next(k for k in sorted(sd) if k.endswith(".bias") and arch.keep(k))
    broken = dict(sd)
    broken.pop(key)
    with pytest.raises(ModelLoadError, match="missing") as err:
        arch.load(broken, source="broken.safetensors", **options)
    assert "broken.safetensors" in str(err.value)
    bad = dict(sd)
    bad[key] = torch.zeros(bad[key].numel() + 1)
    with pytest.raises(StrictLoadError, match="another shape"):
        arch.load(bad, source="bad.safetensors", **options)


@pytest.mark.parametrize(("arch_id", "keys", "options"), REAL_KEY_LISTS, ids=[k for _, k, _ in REAL_KEY_LISTS])
def test_real_size_key_lists_load_on_meta(arch_id, keys, options):
    sd = meta_state_dict_from_key_list(FIX / keys)
    assert registry.detect_family(sd) == arch_id
    options = dict(options)
    if "config_file" in options:
        options["config"] = json.loads((DATA / options.pop("config_file")).read_text())
    desc = registry.get(arch_id).load(sd, **options)
    if registry.get(arch_id).kind == "model":
        assert all(p.is_meta for p in desc.model.parameters())
        kept = {k for k in sd if registry.get(arch_id).keep(k)}
        own = desc.model.state_dict()
        assert kept <= set(own) and all(tuple(own[k].shape) == tuple(sd[k].shape) for k in kept)


def test_seesr_shape_inference_matches_the_release_config():
    """The SD-2 rules (32 groups, 64-wide heads) reproduce the release config from the real-size key lists."""
    from aware_restore.core.seesr.config import SHAPE_KEYS, infer_controlnet_config, infer_unet_config

    for infer, keys, cfg in ((infer_unet_config, "seesr_unet_keys.txt", "unet_config.json"),
                             (infer_controlnet_config, "seesr_controlnet_keys.txt", "controlnet_config.json")):
        got = infer(meta_state_dict_from_key_list(FIX / "seesr" / keys))
        release = json.loads((DATA / cfg).read_text())
        for k in (*SHAPE_KEYS, "attention_head_dim", "norm_num_groups"):
            if k in release:
                assert got[k] == release[k], k


@pytest.mark.parametrize("wanted", [a.id for a in registry.architectures()])
def test_a_file_of_another_family_is_refused(wanted):
    arch = registry.get(wanted)
    for other, label, sd, _opts, _exp in CASES:
        if other == wanted or label != CASES[[c[0] for c in CASES].index(other)][1]:
            continue  # one case per other family
        with pytest.raises(WrongModelError) as err:
            registry.load(sd, wanted)
        msg = str(err.value)
        assert arch.title in msg and f"models/{arch.folder}" in msg and registry.describe(sd) in msg


def test_ssen_without_reference_branch_is_accepted_by_the_loaders(tmp_path):
    """The mismatch the contract issue found: a use_ssen=False config was refused by detection."""
    from aware_restore.core.checkpoint import save_safetensors
    from aware_restore.core.ssen import SSENConfig, SSENet, load_ssen

    model = SSENet(SSENConfig(nf=8, n_pre=1, n_post=1, use_ssen=False))
    path = save_safetensors(model.state_dict(), tmp_path / "bare.safetensors")
    assert registry.detect_family(model.state_dict()) == "ssen"
    assert load_ssen(path).ssen is None
