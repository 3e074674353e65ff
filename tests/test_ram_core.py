"""RAM / DAPE tagger: parity with the official code's outputs on the tiny fixtures, real-size key lists on the
meta device, batching, loading errors, conversion and the tag-selection options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from aware_restore.core.errors import StrictLoadError
from safetensors.torch import load_file

from aware_restore.core.checkpoint import load_state_dict, meta_state_dict_from_key_list, read_metadata
from aware_restore.core.ram import DapeEmbeds, build_tagger, convert, load_tagger, preprocess
from aware_restore.core.ram import tags as tagmod
from aware_restore.core.ram.keys import split_ram
from aware_restore.core.ram.lora import merge_lora
from aware_restore.core.registry import WrongModelError

FIX = Path(__file__).resolve().parent / "fixtures" / "ram"
RAM, DAPE = FIX / "ram_tiny.pth", FIX / "dape_tiny.pth"
ATOL, RTOL = 1e-5, 1e-5  # fixture README atol 1e-5; rtol 1e-5 for float32 kernels that differ between CPUs


@pytest.fixture(scope="module")
def io():
    return load_file(str(FIX / "io.safetensors"))


@pytest.fixture(scope="module")
def meta():
    return json.loads((FIX / "io.json").read_text())


@pytest.fixture(scope="module")
def image(io):
    return io["image0.u8"].permute(2, 0, 1).unsqueeze(0).float() / 255.0


@pytest.fixture(scope="module")
def models():
    return {"ram": load_tagger(RAM), "dape": load_tagger(RAM, DAPE)}


def test_preprocess_matches_official_pixels(io, image, meta):
    px = preprocess(image)
    assert px.shape == (1, 3, 384, 384) and px.dtype == torch.float32
    assert torch.equal(px, io["pixel_values"])
    noaa = preprocess(image, antialias=False)
    diff = (noaa - px).abs()
    assert diff.max().item() == pytest.approx(meta["pixel_values_aa_vs_noaa_maxabs"], rel=1e-4)
    assert diff.mean().item() == pytest.approx(meta["pixel_values_aa_vs_noaa_meanabs"], rel=1e-3)


@pytest.mark.parametrize("name", ["ram", "dape"])
def test_parity_with_official(models, io, meta, image, name):
    model = models[name]
    with torch.no_grad():
        logits, embeds = model(io["pixel_values"])
    assert logits.shape == (1, 4585) and embeds.shape == (1, 145, 512)
    torch.testing.assert_close(embeds, io[f"{name}.image_embeds"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(logits, io[f"{name}.logits"], atol=ATOL, rtol=RTOL)
    torch.testing.assert_close(torch.sigmoid(logits), io[f"{name}.probs"], atol=ATOL, rtol=RTOL)
    visual = model.visual_encoder(io["pixel_values"])
    torch.testing.assert_close(visual, io[f"{name}.visual_encoder_out"], atol=ATOL, rtol=RTOL)
    # from the raw uint8 image through preprocess: exact tag strings and indices
    expected = meta["outputs"][name]
    assert model.tag(image) == expected["tags"]
    probs, _ = model.predict(image)
    sel = tagmod.select(probs, model.class_thresholds, model.tag_names)
    assert sel == expected["tag_indices"]
    assert model.dape_merged is (name == "dape")


def test_dape_changes_embeddings(models, io):
    with torch.no_grad():
        a = models["ram"](io["pixel_values"])[1]
        b = models["dape"](io["pixel_values"])[1]
    assert (a - b).abs().max() > 0.5  # 1.47 in the reference


def test_batch_equals_single_runs(models, image):
    other = torch.rand(1, 3, 300, 420, generator=torch.Generator().manual_seed(5))
    batch = torch.cat([image, other])
    model = models["dape"]
    payload = model.run(batch)
    probs_b, emb_b = model.predict(batch)
    assert isinstance(payload, DapeEmbeds) and len(payload) == 2 and payload.tags[0] != payload.tags[1]
    torch.testing.assert_close(payload.embeds, emb_b, atol=0, rtol=0)
    for i, single in enumerate((image, other)):
        probs_s, emb_s = model.predict(single)
        torch.testing.assert_close(probs_b[i:i + 1], probs_s, atol=ATOL, rtol=RTOL)
        torch.testing.assert_close(emb_b[i:i + 1], emb_s, atol=ATOL, rtol=RTOL)
        assert model.tags_from_probs(probs_s) == [payload.tags[i]]


def test_real_size_key_list_builds_on_meta():
    sd = meta_state_dict_from_key_list(FIX / "ram_swin_large_keys.txt")
    weights, lora, ignored = split_ram(sd)
    assert not lora and len(ignored) == 641 + 35 and len(weights) == 401 - 35
    model = build_tagger(weights)
    cfg = model.cfg
    assert (cfg.swin.embed_dim, cfg.swin.depths, cfg.swin.heads, cfg.swin.window) == (192, (2, 2, 18, 2),
                                                                                       (6, 12, 24, 48), 12)
    assert (cfg.swin.image_size, cfg.num_classes, cfg.embed_dim, cfg.head_hidden, cfg.head_layers,
            cfg.head_intermediate) == (384, 4585, 512, 768, 2, 3072)
    got = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert got == {k: tuple(v.shape) for k, v in weights.items()}
    assert 200e6 < sum(p.numel() for p in model.parameters()) < 230e6  # ≈213M inference parameters
    # the shifted-window masks are recomputed, and match the stored buffer shapes
    stored = {k[len("visual_encoder."):-len(".attn_mask")]: t.shape for k, t in sd.items() if k.endswith(".attn_mask")}
    built = {n: b.mask.shape for n, b in model.visual_encoder.named_modules() if getattr(b, "mask", None) is not None}
    assert built == stored and len(built) == 11  # same shifted blocks (none in the 12×12 last stage)
    # DAPE: every used LoRA pair fits its base weight; shapes unchanged after merging
    dape = meta_state_dict_from_key_list(FIX / "dape_keys.txt")
    assert len(dape) == 248
    merged = merge_lora(weights, dape)
    assert {k: v.shape for k, v in merged.items()} == {k: v.shape for k, v in weights.items()}
    build_tagger(merged)


def test_merge_formula_on_fixture():
    base, _, _ = split_ram(load_state_dict(RAM))
    base = {k: v.float() for k, v in base.items()}
    lora = load_state_dict(DAPE)
    merged = merge_lora(base, lora)
    key = "visual_encoder.layers.0.blocks.0.attn.qkv"
    w0, w1 = base[key + ".weight"], merged[key + ".weight"]
    a, b = lora[key + ".lora_A"].float(), lora[key + ".lora_B"].float()
    d = w0.shape[1]
    torch.testing.assert_close(w1[:d], w0[:d] + b[:d] @ a[:8] / 8)
    assert torch.equal(w1[d:2 * d], w0[d:2 * d])  # k rows untouched
    torch.testing.assert_close(w1[2 * d:], w0[2 * d:] + b[d:] @ a[8:] / 8)
    q = "tagging_head.encoder.layer.1.crossattention.self.key"
    torch.testing.assert_close(merged[q + ".weight"], base[q + ".weight"]
                               + lora[q + ".lora_B"].float() @ lora[q + ".lora_A"].float() / 8)
    v = "tagging_head.encoder.layer.1.crossattention.self.value.weight"
    assert torch.equal(merged[v], base[v])


def test_dape_alone_is_an_error():
    with pytest.raises(WrongModelError, match=r"DAPE LoRA.*RAM checkpoint \(ram_swin_large_14m.pth\)"):
        load_tagger(DAPE)


def test_wrong_files_name_the_expected_model(tmp_path):
    with pytest.raises(WrongModelError, match="not a DAPE LoRA file"):
        load_tagger(RAM, RAM)
    sd15 = {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(4, 4, 3, 3)}
    with pytest.raises(WrongModelError, match="RAM tagger") as exc:
        load_tagger(sd15)
    assert "Stable Diffusion" in str(exc.value)


def test_legacy_prefix_unused_keys_and_strictness(models, io):
    sd = load_state_dict(RAM)
    assert any(k.startswith("tag_encoder.") for k in sd) and any(k.startswith("text_decoder.") for k in sd)
    legacy = {k.replace("tagging_head.", "vision_multi."): v for k, v in sd.items()}
    with torch.no_grad():
        ref = models["ram"](io["pixel_values"])[0]
        assert torch.equal(load_tagger(legacy)(io["pixel_values"])[0], ref)
    broken = dict(sd)
    del broken["fc.bias"]
    with pytest.raises(StrictLoadError, match="fc.bias"):
        load_tagger(broken)
    del broken["wordvec_proj.weight"]
    with pytest.raises(ValueError, match="wordvec_proj.weight' is missing"):
        load_tagger(broken)


def test_ramlora_state_dict_with_zero_lora_equals_ram(models, io):
    sd = dict(load_state_dict(RAM))
    for k, v in load_state_dict(DAPE).items():
        sd[k] = torch.zeros_like(v) if k.endswith("lora_B") else v
    with torch.no_grad():
        got = load_tagger(sd)(io["pixel_values"])[0]
        assert torch.equal(got, models["ram"](io["pixel_values"])[0])


def test_convert_fp16_safetensors(tmp_path, models, image, meta):
    plain = convert(RAM, tmp_path / "ram.safetensors")
    sd = load_file(str(plain))
    assert all(not k.startswith(("tag_encoder", "text_decoder")) and "attn_mask" not in k for k in sd)
    assert all(v.dtype == torch.float16 for v in sd.values())
    assert read_metadata(plain)["dape_merged"] == "false"
    assert load_tagger(plain).tag(image) == meta["outputs"]["ram"]["tags"]  # fp16 weights stay exact
    merged = convert(RAM, tmp_path / "ram_dape.safetensors", dape=DAPE)
    assert read_metadata(merged)["dape_merged"] == "true"
    model = load_tagger(merged)
    assert model.dape_merged
    probs, _ = model.predict(image)
    ref, _ = models["dape"].predict(image)
    assert (probs - ref).abs().max() < 5e-3  # merged weights rounded to fp16
    # loading: a DAPE given again for a merged file is skipped (logged, reported in the descriptor)
    from aware_restore.core.ram.load import DapeAlreadyMergedError, load_tagger_descriptor
    again = load_tagger_descriptor(merged, DAPE)
    assert again.extra["dape_skipped"] and again.model.dape_merged
    assert torch.equal(again.model.predict(image)[0], probs)
    with pytest.raises(DapeAlreadyMergedError, match="already has a DAPE"):  # converting twice is refused
        convert(merged, tmp_path / "twice.safetensors", dape=DAPE)
    with pytest.raises(ValueError, match=".safetensors"):
        convert(RAM, tmp_path / "x.pth")


def test_tag_options(models, image):
    model = models["dape"]
    full = model.tag(image)[0].split(", ")
    assert model.tag(image, exclude="Washer,  yurt\nnope")[0].split(", ") == [t for t in full
                                                                             if t not in ("washer", "yurt")]
    probs, _ = model.predict(image)
    top3 = model.tag(image, max_tags=3)[0].split(", ")
    order = sorted(full, key=lambda t: -probs[0, model.tag_names.index(t)].item())[:3]
    assert set(top3) == set(order) and top3 == [t for t in full if t in order]  # tag-list order kept
    assert model.tag(image, max_tags=0) == [""]
    assert model.tag(image, threshold=1.0) == [""]
    many = model.tag(image, threshold=0.5)[0].split(", ")
    assert len(many) == int((probs > 0.5).sum()) > len(full)
    with pytest.raises(ValueError, match="threshold"):
        model.tag(image, threshold=1.5)


def test_bad_inputs(models, image):
    model = models["ram"]
    gray = image.mean(1, keepdim=True)
    rgba = torch.cat([image, torch.ones_like(gray)], 1)
    assert model.tag(rgba) == model.tag(image)
    assert model.tag(gray) == model.tag(gray.expand(-1, 3, -1, -1))
    assert len(model.tag(torch.rand(1, 3, 2, 3, generator=torch.Generator().manual_seed(0)))) == 1  # tiny image
    with pytest.raises(ValueError, match=r"\[B,3,384,384\]"):
        model(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="RGB images"):
        model.tag(torch.zeros(1, 5, 8, 8))


def test_dape_embeds_payload():
    e = DapeEmbeds(torch.zeros(2, 145, 512), ("a, b", "c"))
    assert len(e) == 2 and e.tokens == 145 and e.dim == 512
    one = e.select(-1)
    assert one.embeds.shape == (1, 145, 512) and one.tags == ("c",)
    assert e.to(torch.float16).embeds.dtype == torch.float16
    with pytest.raises(ValueError):
        DapeEmbeds(torch.zeros(145, 512))
    with pytest.raises(ValueError):
        DapeEmbeds(torch.zeros(2, 145, 512), ("x",))
    with pytest.raises(IndexError):
        e.select(2)


def test_cli_tag_and_convert(tmp_path, capsys, meta, io):
    from PIL import Image

    from aware_restore.cli import main

    models = tmp_path / "models"
    import kit.ram

    kit.ram.write(models)
    img = tmp_path / "lr.png"
    Image.fromarray(io["image0.u8"].numpy()).save(img)
    assert main(["--models-dir", str(models), "tag", str(img), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["dape_merged"] and doc["results"] == [{"image": str(img), "tags": meta["outputs"]["dape"]["tags"][0]}]
    assert main(["--models-dir", str(models), "tag", str(img), str(img), "--no-dape"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{img}: {meta['outputs']['ram']['tags'][0]}"] * 2
    out = tmp_path / "ram_dape.safetensors"
    assert main(["tag-convert", str(RAM), str(out), "--dape", str(DAPE)]) == 0
    assert read_metadata(out)["dape_merged"] == "true" and "DAPE merged" in capsys.readouterr().out
    # the merged file alone gives the DAPE tags (the found DAPE.pth is not applied twice)
    assert main(["--models-dir", str(models), "tag", str(img), "--ram", str(out)]) == 0
    assert capsys.readouterr().out == f"{img}: {meta['outputs']['dape']['tags'][0]}\n"
    assert main(["tag", str(img), "--ram", str(DAPE)]) == 1  # DAPE alone: a clear error, no traceback


def test_antialias_flag_reaches_preprocessing(models, image):
    model = models["dape"]
    probs_aa, emb_aa = model.predict(image)
    probs_no, emb_no = model.predict(image, antialias=False)
    with torch.no_grad():
        logits, emb = model(preprocess(image, antialias=False))
    torch.testing.assert_close(emb_no, emb, atol=0, rtol=0)
    torch.testing.assert_close(probs_no, torch.sigmoid(logits), atol=0, rtol=0)
    assert (emb_no - emb_aa).abs().max() > 1e-3
    torch.testing.assert_close(model.embed(image, antialias=False), emb_no, atol=0, rtol=0)


def test_other_config_round_trips_through_shape_inference():
    from aware_restore.core.ram import RamConfig, SwinConfig, Tagger
    from aware_restore.core.ram.swin import shift_mask

    cfg = RamConfig(SwinConfig(8, (2, 1, 1, 2), (1, 1, 2, 2), 6, image_size=192), 4585, 512, 32, 1, 48)
    model = Tagger(cfg).eval()
    g = torch.Generator().manual_seed(7)
    sd = {k: torch.randn(v.shape, generator=g) * 0.2 for k, v in model.state_dict().items()}
    # as in an official state dict: the shifted-window masks are stored (this reveals the 192 px input)
    sd["visual_encoder.layers.0.blocks.1.attn_mask"] = shift_mask(48, 6, 3)
    sd["visual_encoder.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(36, 36, dtype=torch.long)
    loaded = load_tagger(sd)
    assert loaded.cfg == cfg and loaded.visual_encoder.layers[0].blocks[1].shift == 3
    assert loaded.visual_encoder.layers[3].blocks[1].shift == 0  # 6×6 grid = the window: never shifted
    model.load_state_dict({k: v for k, v in sd.items() if k in model.state_dict()})
    x = torch.rand(2, 3, 192, 192, generator=g)
    with torch.no_grad():
        a, b = model(preprocess(x, 192)), loaded(preprocess(x, 192))
    assert a[1].shape == (2, 1 + 6 * 6, 512)
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)


def test_tag_images_checks_the_batch_once(models, monkeypatch):
    """Issue 19: the batch is scanned for NaN once, not again by the tagger for every chunk."""
    from aware_restore.core import image as im
    from aware_restore.core.ram import tag_images

    scanned = []
    real = im._not_finite
    monkeypatch.setattr(im, "_not_finite", lambda x: scanned.append(tuple(x.shape)) or real(x))
    batch = torch.rand(3, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    assert len(tag_images(models["ram"], batch, chunk=1)) == 3
    assert scanned == [(3, 3, 40, 48)]
    models["ram"].run(batch[:1])  # the tagger called on its own checks its input
    assert scanned[1:] == [(1, 3, 40, 48)]


def test_cli_finds_the_ram_file_not_ram_plus(tmp_path, monkeypatch):
    """Issue 19: the CLI's own finder took the first file starting with 'ram' — ram_plus_swin_large_14m.pth (RAM++,
    another model) sorts before ram_swin_large_14m.pth. One finder now (core.paths.find_model, patterns in order of
    preference)."""
    import argparse

    from aware_restore.cli.ram import resolve_files
    from aware_restore.core.paths import find_model, require_model

    monkeypatch.delenv("AWARE_RESTORE_MODELS", raising=False)
    monkeypatch.delenv("COMFYUI_DIR", raising=False)
    folder = tmp_path / "dape"
    folder.mkdir()
    for name in ("ram_plus_swin_large_14m.pth", "ram_swin_large_14m.pth", "DAPE.pth"):
        (folder / name).write_bytes(b"x")
    args = argparse.Namespace(ram=None, dape=None, no_dape=False, models_dir=[str(tmp_path)])
    assert resolve_files(args) == ((folder / "ram_swin_large_14m.pth").resolve(), (folder / "DAPE.pth").resolve())
    assert find_model("dape", "ram*", [tmp_path]).name == "ram_plus_swin_large_14m.pth"  # why the order matters
    assert find_model("dape", ("RAM_SWIN*", "ram*"), [tmp_path]).name == "ram_swin_large_14m.pth"  # any case
    (folder / "ram_swin_large_14m.pth").unlink()
    with pytest.raises(FileNotFoundError, match="no RAM checkpoint .* folders searched: .*dape. Pass --ram"):
        resolve_files(args)
    assert require_model("dape", "dape*", [tmp_path]).name == "DAPE.pth"
    # the ComfyUI loader's default RAM file comes from the same rule
    from aware_restore.core.paths import first_match
    from aware_restore.core.ram.keys import RAM_PATTERNS

    names = ["ram_plus_swin_large_14m.pth", "sub/ram_swin_large_14m.pth", "ram_dape_fp16.safetensors"]
    assert first_match(names, RAM_PATTERNS) == "sub/ram_swin_large_14m.pth"
    assert first_match(names[:1] + names[2:], RAM_PATTERNS) == "ram_dape_fp16.safetensors"
    assert first_match(names[:1], RAM_PATTERNS) is None
