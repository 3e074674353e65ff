"""DA-CLIP core: parity with the official code (golden fixtures from Algolzw/daclip-uir on tiny random weights),
loading of both official file formats, real-size key lists, preprocessing and classification."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest
import torch
from aware_restore.core.checkpoint import (
    load_state_dict,
    meta_state_dict_from_key_list,
    read_metadata,
)
from aware_restore.core.daclip import (
    DEGRADATIONS,
    TORCH_TOLERANCE,
    DaclipEmbeds,
    build_daclip,
    classify,
    convert,
    encode_images,
    infer_config,
    load_daclip,
    logits,
    parse_labels,
    preprocess,
    probabilities,
)
from aware_restore.core.daclip.load import inference_state_dict
from aware_restore.core.errors import StrictLoadError
from aware_restore.core.registry import WrongModelError
from safetensors import safe_open
from safetensors.torch import load_file

FIX = Path(__file__).resolve().parent / "fixtures" / "daclip"
PT, SFT, IO = FIX / "daclip_tiny.pt", FIX / "daclip_tiny.safetensors", FIX / "daclip_io.safetensors"
# fixture README: features 1e-5, logits (x100) 2e-4, probs 2e-5 absolute; plus a relative 1e-5 for float32 kernels that
# differ between CPUs (an absolute-only bound on values of magnitude > 1 is not portable)
ATOL_FEAT, ATOL_LOGITS, ATOL_PROBS, RTOL = 1e-5, 2e-4, 2e-5, 1e-5
INPUTS = {"pixels": "pixels", "raw": "raw_pixels"}


@pytest.fixture(scope="module")
def io_ref() -> dict[str, torch.Tensor]:
    # clone: tensors read straight from safetensors may be unaligned, which changes MKL rounding
    return {k: v.clone() for k, v in load_file(str(IO)).items()}


@pytest.fixture(scope="module", params=["pt", "safetensors"])
def model(request):
    return load_daclip(PT if request.param == "pt" else SFT)


@pytest.fixture(scope="module")
def model_pt():
    return load_daclip(PT)


def _close(a: torch.Tensor, b: torch.Tensor, atol: float, rtol: float = RTOL) -> None:
    """|a - b| <= atol + rtol·|b| elementwise (torch.testing's rule)."""
    assert a.shape == b.shape, (a.shape, b.shape)
    a, b = a.float(), b.float()
    excess = ((a - b).abs() - rtol * b.abs()).max().item()
    assert excess <= atol, f"max abs error {(a - b).abs().max().item():.3g} > {atol} + {rtol}·|ref|"


# --------------------------------------------------------------------------------------------------- parity
@pytest.mark.parametrize("which", list(INPUTS))
def test_image_and_degradation_features_match_official(model, io_ref, which):
    with torch.no_grad():
        clean, degra = model.encode_image(io_ref[INPUTS[which]], control=True)
    _close(clean, io_ref[f"{which}_image_features"], ATOL_FEAT)
    _close(degra, io_ref[f"{which}_degra_features"], ATOL_FEAT)


@pytest.mark.parametrize("which", list(INPUTS))
def test_plain_features_match_and_control_changes_them(model, io_ref, which):
    with torch.no_grad():
        plain = model.encode_image(io_ref[INPUTS[which]], control=False)
        clean, _ = model.encode_image(io_ref[INPUTS[which]], control=True)
    _close(plain, io_ref[f"{which}_plain_image_features"], ATOL_FEAT)
    assert (clean - plain).abs().max() > 0.5  # the controller really steers the frozen tower


@pytest.mark.parametrize("which", list(INPUTS))
def test_control_hiddens_match_official(model_pt, io_ref, which):
    with torch.no_grad():
        _, hiddens = model_pt.control_hiddens(io_ref[INPUTS[which]])
    ours = torch.stack([h.transpose(0, 1) for h in hiddens])  # NLD -> LND as stored by the official code
    _close(ours, io_ref[f"{which}_control_hiddens"], ATOL_FEAT)


def test_text_tokens_and_features_match_official(model, io_ref):
    tokens = model.tokenize(list(DEGRADATIONS))
    assert torch.equal(tokens, io_ref["text_tokens"])
    with torch.no_grad():
        _close(model.encode_text(list(DEGRADATIONS)), io_ref["text_features"], ATOL_FEAT)


@pytest.mark.parametrize("which", list(INPUTS))
def test_logits_and_probabilities_match_official(model, io_ref, which):
    with torch.no_grad():
        _, degra = model.encode_image(io_ref[INPUTS[which]])
        text = model.encode_text(list(DEGRADATIONS))
    _close(logits(degra, text), io_ref[f"{which}_logits"], ATOL_LOGITS)
    _close(probabilities(degra, text), io_ref[f"{which}_probs"], ATOL_PROBS)
    # the stored probabilities are not saturated: the test can tell labels apart
    assert io_ref[f"{which}_probs"].max() < 0.99


def test_classify_end_to_end_from_raw_images(model_pt, io_ref):
    """Raw images of different aspect ratios → probabilities of the official pipeline."""
    for i in range(2):
        raw = io_ref[f"raw_{i}"][None]
        exact = classify_pil(model_pt, raw)
        _close(exact, io_ref["raw_probs"][i:i + 1], ATOL_PROBS)
        fast = classify(model_pt, raw)
        assert fast.shape == (1, 10)
        _close(fast.sum(-1), torch.ones(1), 1e-5)
        assert fast.argmax() == io_ref["raw_probs"][i].argmax()
        _close(fast, io_ref["raw_probs"][i:i + 1], 0.05, rtol=0)  # torch resize: within a few uint8 levels of PIL


def classify_pil(model, raw):
    embeds = encode_images(model, raw, backend="pil")
    with torch.no_grad():
        return probabilities(embeds.degradation, model.encode_text(list(DEGRADATIONS)))


def test_classify_batch_and_user_labels(model_pt, io_ref):
    images = torch.rand(3, 3, 40, 90, generator=torch.Generator().manual_seed(0))
    probs = classify(model_pt, images)
    assert probs.shape == (3, 10)
    single = classify(model_pt, images[1:2])
    _close(probs[1:2], single, 1e-6)  # batching does not change the result
    custom = classify(model_pt, images, labels=["rainy", "hazy"])
    assert custom.shape == (3, 2)
    _close(custom.sum(-1), torch.ones(3), 1e-5)
    # the probabilities restricted to two labels are the renormalised full ones
    full = probs[:, [DEGRADATIONS.index("rainy"), DEGRADATIONS.index("hazy")]]
    _close(custom, full / full.sum(-1, keepdim=True), 1e-5)


# --------------------------------------------------------------------------------------------------- loading
def test_official_pt_is_a_training_checkpoint_that_needs_the_allow_list():
    with pytest.raises(pickle.UnpicklingError, match="numpy"):
        torch.load(PT, weights_only=True)
    raw = load_state_dict(PT)
    assert any(k.startswith("visual.") for k in raw)  # the alias keys are in the file...
    kept = inference_state_dict(raw)
    assert not any(k.startswith("visual.") for k in kept)  # ...and dropped
    assert len(kept) == 125 and "logit_scale" in kept


def test_pt_and_safetensors_give_identical_fp32_weights():
    a, b = load_daclip(PT).state_dict(), load_daclip(SFT).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == torch.float32, k
        assert torch.equal(a[k], b[k]), k
    assert "clip.attn_mask" not in a  # non-persistent buffer, rebuilt after loading
    m = load_daclip(SFT)
    mask = m.clip.attn_mask
    assert mask.device.type == "cpu" and torch.isinf(mask[0, 1]) and mask[1, 0] == 0


def test_load_from_state_dict_and_dtype(io_ref):
    sd = load_state_dict(PT)  # a plain dict, still with the visual.* aliases
    m = load_daclip(sd, dtype=torch.bfloat16)
    assert next(m.parameters()).dtype == torch.bfloat16 and not any(p.requires_grad for p in m.parameters())
    assert not m.training
    with torch.no_grad():
        clean, _ = m.encode_image(io_ref["pixels"])
    _close(clean, io_ref["pixels_image_features"], 0.15, rtol=0)  # bf16 is close, but not fp32-close


def test_config_inferred_from_tiny_model():
    cfg = load_daclip(SFT).config
    assert (cfg.embed_dim, cfg.image_size, cfg.patch_size, cfg.vision_width, cfg.vision_layers) == (32, 64, 16, 128, 3)
    assert (cfg.text_width, cfg.text_layers, cfg.context_length, cfg.vocab_size) == (64, 2, 77, 49408)
    assert (cfg.vision_heads, cfg.text_heads) == (2, 1)


@pytest.mark.parametrize("name,expect", [
    ("B32", {"image_size": 224, "patch_size": 32, "vision_width": 768, "vision_layers": 12, "text_width": 512,
             "text_layers": 12, "embed_dim": 512, "vision_heads": 12, "text_heads": 8}),
    ("L14", {"image_size": 224, "patch_size": 14, "vision_width": 1024, "vision_layers": 24, "text_width": 768,
             "text_layers": 12, "embed_dim": 768, "vision_heads": 16, "text_heads": 12}),
])
def test_real_size_key_lists_build_exactly_on_meta(name, expect):
    listed = meta_state_dict_from_key_list(FIX / f"daclip_keys_{name}.txt")
    sd = inference_state_dict(listed)
    assert len(listed) - len(sd) == sum(k.startswith("visual.") for k in listed)
    cfg = infer_config(sd)
    for key, value in expect.items():
        assert getattr(cfg, key) == value, (key, getattr(cfg, key))
    model = build_daclip(cfg, device="meta")
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in sd.items()}
    assert ours == theirs
    model.load_state_dict(sd, strict=True, assign=True)


def test_wrong_file_is_refused_naming_daclip(tmp_path):
    from safetensors.torch import save_file

    irsde = {"init_conv.weight": torch.zeros(4, 6, 3, 3), "final_conv.weight": torch.zeros(3, 4, 3, 3),
             "downs.0.0.block1.proj.weight": torch.zeros(4, 4, 3, 3)}
    path = tmp_path / "universal-ir.safetensors"
    save_file(irsde, str(path))
    with pytest.raises(WrongModelError) as err:
        load_daclip(path)
    msg = str(err.value)
    assert "DA-CLIP" in msg and "models/daclip" in msg and "universal-ir.safetensors" in msg


def test_broken_daclip_file_gives_a_clear_error():
    sd = inference_state_dict(load_state_dict(SFT))
    del sd["visual_control.transformer.zero_modules.2.weight"]
    with pytest.raises(StrictLoadError, match="zero_modules.2.weight"):
        load_daclip(sd)
    sd = inference_state_dict(load_state_dict(SFT))
    sd["visual_control.proj"] = torch.zeros(128, 16)
    with pytest.raises(StrictLoadError, match="visual_control.proj"):
        load_daclip(sd)


def test_convert_writes_compact_fp16_safetensors(tmp_path, io_ref):
    out = convert(PT, tmp_path / "daclip_tiny_fp16.safetensors")
    meta = read_metadata(out)
    assert meta["family"] == "daclip"
    assert json.loads(meta["daclip_config"])["vision_width"] == 128
    with safe_open(str(out), framework="pt") as f:
        keys = list(f.keys())
        assert all(f.get_slice(k).get_dtype() == "F16" for k in keys)
    assert len(keys) == 125 and not any(k.startswith("visual.") for k in keys)
    with torch.no_grad():
        clean, degra = load_daclip(out).encode_image(io_ref["pixels"])
    _close(clean, io_ref["pixels_image_features"], ATOL_FEAT)
    _close(degra, io_ref["pixels_degra_features"], ATOL_FEAT)


# --------------------------------------------------------------------------------------------------- preprocessing
def test_preprocess_matches_official_clip_transform(io_ref):
    for i in range(2):
        raw = io_ref[f"raw_{i}"]
        # the official code truncates to uint8 before PIL
        assert torch.equal((raw.permute(1, 2, 0) * 255).to(torch.uint8), io_ref[f"raw_uint8_{i}"])
        exact = preprocess(raw[None], 64, backend="pil")
        assert torch.equal(exact[0], io_ref["raw_pixels"][i])
        fast = preprocess(raw[None], 64)
        err = (fast[0] - io_ref["raw_pixels"][i]).abs().max().item()
        assert err <= TORCH_TOLERANCE
        assert (fast[0] - io_ref["raw_pixels"][i]).abs().mean() < 0.2 * TORCH_TOLERANCE  # mostly exact, a few 1-level misses


def test_preprocess_geometry_batches_and_channels():
    g = torch.Generator().manual_seed(1)
    assert preprocess(torch.rand(4, 3, 31, 200, generator=g), 64).shape == (4, 3, 64, 64)
    assert preprocess(torch.rand(1, 3, 1, 1, generator=g), 64).shape == (1, 3, 64, 64)  # upscaled
    rgb = torch.rand(2, 3, 50, 77, generator=g)
    rgba = torch.cat([rgb, torch.rand(2, 1, 50, 77, generator=g)], 1)
    assert torch.equal(preprocess(rgba, 64), preprocess(rgb, 64))  # alpha ignored
    gray = torch.rand(1, 1, 50, 77, generator=g)
    _close(preprocess(gray, 64), preprocess(gray.expand(-1, 3, -1, -1), 64), 0, rtol=0)
    # a square image already at model size only gets normalised
    x = torch.randint(0, 256, (1, 3, 64, 64), generator=g).float() / 255
    from aware_restore.core.daclip import OPENAI_MEAN, OPENAI_STD
    expect = (x - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    _close(preprocess(x, 64), expect, 1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        preprocess(torch.rand(1, 5, 8, 8), 64)
    with pytest.raises(ValueError, match="backend"):
        preprocess(x, 64, backend="cv2")


def test_encode_image_rejects_unprocessed_pixels(model_pt):
    with pytest.raises(ValueError, match=r"preprocess\(images, 64\)"):
        model_pt.encode_image(torch.rand(1, 3, 50, 77))


# --------------------------------------------------------------------------------------------------- helpers
def test_daclip_embeds_dataclass():
    e = DaclipEmbeds(torch.arange(6.).view(3, 2), -torch.arange(6.).view(3, 2))
    assert len(e) == 3 and e.dim == 2
    one = e.select(1)
    assert one.clean.tolist() == [[2., 3.]] and one.degradation.tolist() == [[-2., -3.]]
    assert len(e.select(slice(0, 2))) == 2
    assert e.to(torch.float16).clean.dtype == torch.float16
    with pytest.raises(IndexError):
        e.select(3)
    with pytest.raises(ValueError, match="same shape"):
        DaclipEmbeds(torch.zeros(2, 4), torch.zeros(1, 4))


def test_parse_labels():
    assert parse_labels(None) == list(DEGRADATIONS)
    assert parse_labels("rainy\n\n hazy \nrainy, snowy") == ["rainy", "hazy", "snowy"]
    with pytest.raises(ValueError, match="no degradation labels"):
        parse_labels(" \n ")
    assert DEGRADATIONS == ("motion-blurry", "hazy", "jpeg-compressed", "low-light", "noisy", "raindrop", "rainy",
                            "shadowed", "snowy", "uncompleted")
