"""Bad input, table-driven, over every node and every CLI command (issue 12).

Each row is one input a user can give — a broken or misnamed file, a file of another family, RGBA, grayscale,
1×1, elongated, NaN, an empty batch, mismatched batches, an overlap ≥ the tile, a wrong payload on a socket — and
the outcome class it must have:

* ``OK``: handled — the row's own checks pass (output shape, values finite and in [0, 1], tile counts);
* ``Err(cls, pattern)``: an error of the pack (:class:`AwareRestoreError`) or a ``FileNotFoundError``, of class
  ``cls``, whose message matches ``pattern`` (it names the input);
* ``CliErr(pattern)``: the command exits non-zero with one error line matching ``pattern``, no traceback and no
  "unexpected <library error>" line.

A raw library error (``RuntimeError``, ``KeyError``, ``EOFError``, ``IndexError`` from torch / safetensors /
pickle / PIL) fails every row. IR-SDE always runs its 100-step schedule; rows whose outcome class does not depend
on the schedule (shapes, alpha, tiling) run with a 2-step schedule (``short_irsde``), rows that must fail do so
before sampling. SeeSR rows use the core functions (``sample`` / ``upscale`` with tiny models and stand-in text
encoder / VAE) and the ``seesr`` command, and the SeeSR nodes have their own rows; ``test_every_node_has_rows``
checks that every node has at least one.
"""

from __future__ import annotations

import logging
import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from aware_restore.core.errors import (
    AwareRestoreError,
    CheckpointError,
    ContextMismatchError,
    DownloadError,
    InputError,
    PayloadError,
    StrictLoadError,
    WrongModelError,
)
from kit.seesr import write_tiny_sd2
from PIL import Image

FIX = Path(__file__).resolve().parent / "fixtures"
OK = "handled"


@dataclass(frozen=True)
class Err:
    cls: type
    pattern: str


@dataclass(frozen=True)
class CliErr:
    pattern: str


# ----------------------------------------------------------------------------------------------- inputs
def img(b=1, h=16, w=16, c=3, seed=0) -> torch.Tensor:
    """A ComfyUI IMAGE [B,H,W,C] in [0,1]."""
    return torch.rand(b, h, w, c, generator=torch.Generator().manual_seed(seed))


def nan_img(b=1, h=16, w=16, patch=4) -> torch.Tensor:
    x = img(b, h, w)
    x[:, :patch, :patch] = float("nan")
    return x


def empty_img() -> torch.Tensor:
    return torch.zeros(0, 16, 16, 3)


def channels_first() -> torch.Tensor:
    return torch.rand(1, 3, 16, 16)


def finite_image(x: torch.Tensor, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    assert isinstance(x, torch.Tensor) and bool(torch.isfinite(x).all()), "non-finite output"
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    if shape is not None:
        assert tuple(x.shape) == tuple(shape), (tuple(x.shape), shape)
    return x


# ----------------------------------------------------------------------------------------------- environment
class Ctx:
    """What a row may use: the ComfyUI double's environment, node classes, loaded payloads, scratch files."""

    def __init__(self, env, files: dict[str, Path], tmp: Path, monkeypatch):
        self.env, self.files, self.tmp, self.monkeypatch = env, files, tmp, monkeypatch
        self.nodes = env.node_classes
        self._cache: dict[str, object] = {}

    def node(self, node_id):
        return self.nodes[node_id]

    def payload(self, which: str):
        if which not in self._cache:
            load = {
                "daclip": lambda: self.node("DACLIPLoader").execute("daclip_tiny.safetensors", "auto"),
                "irsde": lambda: self.node("IRSDELoader").execute("universal-ir.pth"),
                "dape": lambda: self.node("DAPELoader").execute("ram_swin_large_14m.pth", "DAPE.pth"),
                "ssen": lambda: self.node("SSENLoader").execute("ssen_tiny.safetensors"),
            }[which]
            self._cache[which] = load().args[0]
        return self._cache[which]

    def embeds(self, b=1, width=32):
        from aware_restore.core.daclip import DaclipEmbeds

        g = torch.Generator().manual_seed(b)
        return DaclipEmbeds(torch.randn(b, width, generator=g), torch.randn(b, width, generator=g))


_CACHE: dict[str, object] = {}


def _broken_files(models: Path) -> dict[str, Path]:
    """Broken and misplaced files in the double's models tree (removed at the end of the module)."""
    out: dict[str, Path] = {}

    def put(key: str, folder: str, name: str, content: bytes | Path) -> None:
        path = models / folder / name
        if isinstance(content, Path):
            shutil.copyfile(content, path)
        else:
            path.write_bytes(content)
        out[key] = path

    full = (FIX / "irsde" / "irsde_unet_tiny.safetensors").read_bytes()
    put("daclip_empty", "daclip", "broken_empty.pt", b"")
    put("daclip_text", "daclip", "broken_text.pt", b"<!DOCTYPE html><html>Sign in</html>")
    put("daclip_wrong", "daclip", "actually_irsde.safetensors", FIX / "irsde" / "irsde_unet_tiny.safetensors")
    put("irsde_cut", "irsde", "broken_cut.pth", full[: len(full) // 3])
    put("irsde_wrong", "irsde", "actually_daclip.safetensors", FIX / "daclip" / "daclip_tiny.safetensors")
    put("irsde_renamed", "irsde", "renamed_safetensors.pth", FIX / "irsde" / "irsde_unet_tiny.safetensors")
    put("dape_random", "dape", "broken_random.pth", np.random.default_rng(1).integers(0, 256, 999, np.uint8).tobytes())
    put("dape_wrong", "dape", "actually_ssen.safetensors", models / "ssen" / "ssen_tiny.safetensors")
    put("ssen_empty", "ssen", "broken_empty.safetensors", b"")
    put("ssen_wrong", "ssen", "actually_irsde.pth", FIX / "irsde" / "irsde_unet_tiny.safetensors")
    from aware_restore.core.checkpoint import load_state_dict, save_safetensors

    sd = load_state_dict(models / "ssen" / "ssen_tiny.safetensors")
    sd["leftover_from_training.weight"] = torch.zeros(3)  # a key the model does not have
    out["ssen_misfit"] = save_safetensors(sd, models / "ssen" / "misfit.safetensors")
    ram = load_state_dict(models / "dape" / "ram_swin_large_14m.pth")
    ram["tagging_head.leftover_from_training.weight"] = torch.zeros(3)
    torch.save({"model": ram}, models / "dape" / "misfit_ram.pth")
    out["ram_misfit"] = models / "dape" / "misfit_ram.pth"
    zpath = models / "daclip" / "an_archive.pt"
    with zipfile.ZipFile(zpath, "w") as z:
        z.writestr("weights/readme.txt", "see the model page")
    out["daclip_zip"] = zpath
    return out


@pytest.fixture(scope="module")
def broken(comfy_env):
    files = _broken_files(comfy_env.models_dir)
    yield files
    for p in files.values():
        p.unlink(missing_ok=True)


@pytest.fixture()
def ctx(comfy_env, broken, tmp_path, monkeypatch):
    c = Ctx(comfy_env, broken, tmp_path, monkeypatch)
    c._cache = _CACHE  # loaded payloads are shared by every row (read-only use)
    return c


@pytest.fixture()
def short_irsde(monkeypatch):
    """A 2-step IR-SDE schedule for rows whose outcome does not depend on the 100 steps (shape, alpha, tiling)."""
    from aware_restore.core.irsde.sde import IRSDE

    monkeypatch.setattr(IRSDE, "timesteps", lambda self: [2, 1])


class forward_calls(list):
    """The input shapes of every forward call of ``module`` while the ``with`` block runs."""

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def __enter__(self):
        self.handle = self.module.register_forward_pre_hook(lambda m, args: self.append(tuple(args[0].shape)))
        return self

    def __exit__(self, *exc):
        self.handle.remove()


# ================================================================================================ node rows
def _colorfix(ctx, image, reference, method="wavelet"):
    return ctx.node("ARColorFix").execute(image, reference, method).args[0]


def r_colorfix_rgba(ctx):
    x = img(2, 12, 20, 4)
    out = finite_image(_colorfix(ctx, x, img(1, 5, 7)), (2, 12, 20, 4))
    assert torch.equal(out[..., 3], x[..., 3])


def r_colorfix_gray(ctx):
    finite_image(_colorfix(ctx, img(1, 12, 20, 1), img(1, 6, 6, 1), "adain"), (1, 12, 20, 3))


def r_colorfix_1x1(ctx):
    finite_image(_colorfix(ctx, img(1, 1, 1), img(1, 1, 1), "adain"), (1, 1, 1, 3))  # was NaN (unbiased var)
    finite_image(_colorfix(ctx, img(1, 1, 1), img(1, 9, 9), "wavelet"), (1, 1, 1, 3))


def r_colorfix_elongated(ctx):
    finite_image(_colorfix(ctx, img(1, 2, 300), img(1, 40, 3)), (1, 2, 300, 3))


NODE_ROWS = {
    # ---------------------------------------------------------------- ARColorFix
    "ARColorFix/rgba": (r_colorfix_rgba, OK),
    "ARColorFix/gray": (r_colorfix_gray, OK),
    "ARColorFix/1x1": (r_colorfix_1x1, OK),
    "ARColorFix/elongated": (r_colorfix_elongated, OK),
    "ARColorFix/nan-image": (lambda c: _colorfix(c, nan_img(), img()), Err(InputError, "image to colour-fix has 16 of")),
    "ARColorFix/nan-reference": (lambda c: _colorfix(c, img(), nan_img(h=8, w=8)),
                                 Err(InputError, "colour reference has")),
    "ARColorFix/empty": (lambda c: _colorfix(c, empty_img(), img()), Err(InputError, "batch is empty")),
    "ARColorFix/mismatched": (lambda c: _colorfix(c, img(3), img(2)), Err(InputError, "colour reference batch has 2")),
    "ARColorFix/channels-first": (lambda c: _colorfix(c, channels_first(), img()),
                                  Err(InputError, r"\[B,H,W,C\].*channels-first")),
    "ARColorFix/payload": (lambda c: _colorfix(c, img(), "reference.png"), Err(InputError, "IMAGE tensor, got str")),
    # ---------------------------------------------------------------- ARDownloadModel
    "ARDownloadModel/unknown-name": (lambda c: c.node("ARDownloadModel").execute("nope.pth"),
                                     Err(DownloadError, "unknown official file 'nope.pth'; known files: ")),
}


# ---------------------------------------------------------------- SeeSR nodes (the sampling itself runs in a real
# ComfyUI: tests/test_comfyui_integration.py; core SeeSR rows are SEESR_ROWS below)
def _vae():
    import sd_nodes

    return sd_nodes.CheckpointLoaderSimple.execute("512-base-ema.safetensors").args[2]


def _lr(ctx, image):
    return ctx.node("SeeSRLREmbedding").execute(_vae(), image, 4, 64).args


def r_lr_shapes(ctx):
    for x in (img(1, 6, 8, 4), img(1, 6, 8, 1), img(1, 1, 1), img(1, 2, 40)):
        latent, cond, _ = _lr(ctx, x)
        finite_image(cond)
        h, w = cond.shape[1:3]
        assert cond.shape[-1] == 3 and h % 8 == 0 and w % 8 == 0 and w / h >= x.shape[2] / x.shape[1] / 2
        assert tuple(latent["samples"].shape[-2:]) == (h // 8, w // 8)


def r_tiled_sampling_overlap(ctx):
    import comfy.model_patcher
    import comfy.patcher_extension

    base = comfy.model_patcher.ModelPatcher(torch.nn.Linear(2, 2), torch.device("cpu"), torch.device("cpu"))
    m = ctx.node("SeeSRTiledSampling").execute(base, 16, 256).args[0]
    assert m is not base and m.get_wrappers(comfy.patcher_extension.WrappersMP.CALC_COND_BATCH, "aware_restore_seesr_tiles")
    from aware_restore.core.seesr.tiles import latent_grid

    assert latent_grid(40, 40, 16, 256).overlap == 8  # clamped to half the tile, stride 8: 16 tiles, not 625


def _clip():
    import sd_nodes

    return sd_nodes.CheckpointLoaderSimple.execute("512-base-ema.safetensors").args[1]


def _text_encode(ctx, embeds, **kw):
    return ctx.node("SeeSRTextEncode").execute(_clip(), embeds, **kw).args


def r_text_encode_batch_empty_tags_and_long_prompt(ctx):
    from aware_restore.core.ram import DapeEmbeds

    long_prompt = " ".join(["word"] * 200)  # 3 chunks of 77 tokens
    pos, neg = _text_encode(ctx, DapeEmbeds(torch.zeros(3, 145, 512), ("", "cat", "")), user_prompt=long_prompt)
    assert pos[0][0].shape[:2] == (3, 231) and pos[0][1]["pooled_output"].shape[0] == 3
    assert neg[0][0].shape[:2] == (3, 77) and bool(torch.isfinite(pos[0][0]).all())


def _final(ctx, image, plan):
    return ctx.node("SeeSRFinalResize").execute(image, plan).args[0]


def r_final_resize_shapes(ctx):
    from aware_restore.core.seesr import plan_sizes

    for (w, h), c in (((1, 1), 4), ((2, 40), 1), ((101, 75), 3)):
        plan = plan_sizes(w, h, 4, 64)
        out = finite_image(_final(ctx, img(2, plan.process[1], plan.process[0], c), plan))
        assert tuple(out.shape) == (2, 4 * h, 4 * w, 4 if c == 4 else 3)


def _embeds_with_tags(b, tags):
    from aware_restore.core.ram import DapeEmbeds

    return DapeEmbeds(torch.zeros(b, 145, 512), tags)


NODE_ROWS.update({
    "SeeSRTextEncode/batch-empty-tags-long-prompt": (r_text_encode_batch_empty_tags_and_long_prompt, OK),
    "SeeSRTextEncode/payload-embeds": (lambda c: _text_encode(c, torch.zeros(2, 145, 512)),
                                       Err(PayloadError, "'dape_embeds' input must be a DAPE_EMBEDS.*got Tensor")),
    "SeeSRTextEncode/no-tags": (lambda c: _text_encode(c, _embeds_with_tags(2, ())),
                                Err(InputError, "'dape_embeds' input carries no tags")),
    "SeeSRTextEncode/tags-vs-embeds-batch": (lambda c: _text_encode(c, _embeds_with_tags(2, ("a", "b", "c"))),
                                             Err(InputError, "3 tag strings for 2 images")),
    "SeeSRTextEncode/no-clip": (lambda c: c.node("SeeSRTextEncode").execute(None, _embeds_with_tags(1, ("a",))),
                                Err(InputError, "'clip' input is empty")),
    "SeeSRFinalResize/rgba-gray-1x1-elongated": (r_final_resize_shapes, OK),
    "SeeSRFinalResize/wrong-image-size": (lambda c: _final(c, img(1, 96, 128), _lr(c, img(1, 20, 30))[2]),
                                          Err(InputError, r"'image' is 128×96 but 'seesr_size' plans .* 120×80")),
    "SeeSRFinalResize/payload-size": (lambda c: _final(c, img(1, 96, 128), (128, 96)),
                                      Err(PayloadError, "'seesr_size' input must be a SEESR_SIZE")),
    "SeeSRFinalResize/nan": (lambda c: _final(c, nan_img(h=80, w=120), _lr(c, img(1, 20, 30))[2]),
                             Err(InputError, "has 16 of")),
    "SeeSRLoader/outside-folder": (lambda c: c.node("SeeSRLoader").execute("../seesr", "fp32"),
                                   Err(FileNotFoundError, "SeeSR folder '../seesr' was not found")),
    "SeeSRLoader/missing": (lambda c: c.node("SeeSRLoader").execute("nope", "fp32"),
                            Err(FileNotFoundError, "searched")),
    "SeeSRPrompt/empty-tags": (lambda c: c.node("SeeSRPrompt").execute("", ""), OK),
    "SeeSRLREmbedding/rgba-gray-1x1-elongated": (r_lr_shapes, OK),
    "SeeSRLREmbedding/nan": (lambda c: _lr(c, nan_img()), Err(InputError, "LR image has 16 of 256 pixels")),
    "SeeSRLREmbedding/empty": (lambda c: _lr(c, empty_img()), Err(InputError, "batch is empty")),
    "SeeSRApply/payload-model": (lambda c: c.node("SeeSRApply").execute(None, [], [], c.payload("dape"), None, img()),
                                 Err(PayloadError, "'seesr_model' input must be a SEESR_MODEL.*got ram")),
    "SeeSRTiledSampling/overlap>=tile": (r_tiled_sampling_overlap, OK),
})


def _download_offline(ctx):
    ctx.monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import folder_paths

    ctx.monkeypatch.setitem(folder_paths.folder_names_and_paths, "dape", ([str(ctx.tmp / "my_dape")], {".pth"}))
    ctx.node("ARDownloadModel").execute("ram_swin_large_14m.pth")


NODE_ROWS["ARDownloadModel/offline"] = (_download_offline, Err(DownloadError, r"HF_HUB_OFFLINE.*my_dape"))


# ---------------------------------------------------------------- auto nodes (issue 20)
def _degmap(ctx, image, window=0):
    return ctx.node("DACLIPDegradationMap").execute(ctx.payload("daclip"), image, window, 0.5, 4).args


def r_degmap_shapes(ctx):
    for x in (img(1, 12, 20, 4), img(1, 12, 20, 1), img(1, 1, 1), img(1, 2, 300)):
        dmap, pv, _table, *masks = _degmap(ctx, x)
        assert all(tuple(m.shape) == (1, *x.shape[1:3]) and bool(torch.isfinite(m).all()) for m in masks)
        finite_image(pv)


def r_auto_restore_rgba_elongated(ctx):
    x = img(1, 4, 60, 4)
    out = ctx.node("ARAutoRestore").execute(x, ctx.payload("daclip"), ctx.payload("irsde"), None, None, 0, 0,
                                            degraded=0.0, full_strength=0.0, low_resolution=0).args
    finite_image(out[0], (1, 4, 60, 4))
    assert torch.equal(out[0][..., 3], x[..., 3])


def r_fidelity_tiny(ctx):
    for x in (img(1, 1, 1), img(1, 2, 300), img(2, 9, 9, 1)):
        best, heat, passed, _ = ctx.node("ARFidelity").execute(x, x).args
        assert passed and best.shape[:3] == x.shape[:3]
        finite_image(heat)


NODE_ROWS.update({
    "DACLIPDegradationMap/rgba-gray-1x1-elongated": (r_degmap_shapes, OK),
    "DACLIPDegradationMap/nan": (lambda c: _degmap(c, nan_img()), Err(InputError, "image to map has 16 of")),
    "DACLIPDegradationMap/empty": (lambda c: _degmap(c, empty_img()), Err(InputError, "batch is empty")),
    "DACLIPDegradationMap/payload": (lambda c: c.node("DACLIPDegradationMap").execute(c.payload("irsde"), img()),
                                     Err(PayloadError, "'daclip_model' input must be a DACLIP_MODEL")),
    "ARRoute/payload": (lambda c: c.node("ARRoute").execute(img()),
                        Err(PayloadError, "'degradation_map' input must be a AR_DEGRADATION_MAP")),
    "ARAutoRestore/rgba-elongated": (r_auto_restore_rgba_elongated, OK),
    "ARAutoRestore/mismatched-map": (lambda c: c.node("ARAutoRestore").execute(
        img(1, 16, 16), c.payload("daclip"), None, _degmap(c, img(2, 12, 20))[0]),
        Err(InputError, "the degradation map is for 2 image")),
    "ARFidelity/1x1-sliver-gray": (r_fidelity_tiny, OK),
    "ARFidelity/nan": (lambda c: c.node("ARFidelity").execute(img(), nan_img()), Err(InputError, "restored image has")),
    "ARFidelity/mismatched": (lambda c: c.node("ARFidelity").execute(img(2), img(3)), Err(InputError, "not a multiple")),
})


# ---------------------------------------------------------------- DA-CLIP
def _daclip_loader(ctx, key):
    return ctx.node("DACLIPLoader").execute(ctx.files[key].name, "auto")


def _encode(ctx, image, model=None):
    return ctx.node("DACLIPEncode").execute(model if model is not None else ctx.payload("daclip"), image).args[0]


def r_encode_shapes(ctx):
    for x in (img(2, 16, 16, 4), img(1, 16, 16, 1), img(1, 1, 1), img(1, 2, 300)):
        emb = _encode(ctx, x)
        assert len(emb) == x.shape[0] and bool(torch.isfinite(emb.clean).all() & torch.isfinite(emb.degradation).all())


def _classify(ctx, image, labels=None):
    args = (ctx.payload("daclip"), image) + (() if labels is None else (labels,))
    return ctx.node("DACLIPClassifyDegradation").execute(*args)


def r_classify_1x1_gray(ctx):
    out = _classify(ctx, torch.cat([img(1, 1, 1, 1)] * 2))
    _labels, probs, table = out.args
    assert len(probs) == 2 and all(0.0 <= p <= 1.0 for p in probs) and "nan" not in table.lower()


def _from_text(ctx, image, label="noisy", custom=""):
    return ctx.node("DACLIPDegradationFromText").execute(ctx.payload("daclip"), image, label, custom, True).args[0]


def r_from_text_gray(ctx):
    emb = _from_text(ctx, img(2, 9, 30, 1))
    assert len(emb) == 2 and bool(torch.isfinite(emb.degradation).all())


NODE_ROWS.update({
    "DACLIPLoader/empty-file": (lambda c: _daclip_loader(c, "daclip_empty"),
                                Err(CheckpointError, r"broken_empty\.pt': the file is empty")),
    "DACLIPLoader/html-file": (lambda c: _daclip_loader(c, "daclip_text"),
                               Err(CheckpointError, r"broken_text\.pt': it is a web page")),
    "DACLIPLoader/zip-archive": (lambda c: _daclip_loader(c, "daclip_zip"),
                                 Err(CheckpointError, r"an_archive\.pt': it is a zip archive but not a torch")),
    "DACLIPLoader/wrong-family": (lambda c: _daclip_loader(c, "daclip_wrong"),
                                  Err(WrongModelError, r"actually_irsde.*not a DA-CLIP.*IR-SDE.*models/daclip")),
    "DACLIPLoader/missing": (lambda c: c.node("DACLIPLoader").execute("nope.pt", "auto"),
                             Err(FileNotFoundError, r"'nope\.pt' was not found.*daclip")),
    "DACLIPEncode/rgba-gray-1x1-elongated": (r_encode_shapes, OK),
    "DACLIPEncode/nan": (lambda c: _encode(c, nan_img()), Err(InputError, "image to encode has 16 of 256 pixels")),
    "DACLIPEncode/empty": (lambda c: _encode(c, empty_img()), Err(InputError, "batch is empty")),
    "DACLIPEncode/channels-first": (lambda c: _encode(c, channels_first()), Err(InputError, r"\[B,H,W,C\]")),
    "DACLIPEncode/payload": (lambda c: _encode(c, img(), c.payload("irsde")),
                             Err(PayloadError, "'daclip_model' input must be a DACLIP_MODEL.*got irsde")),
    "DACLIPClassify/1x1-gray": (r_classify_1x1_gray, OK),
    "DACLIPClassify/nan": (lambda c: _classify(c, nan_img()), Err(InputError, "not finite")),  # was 'probability nan'
    "DACLIPClassify/empty": (lambda c: _classify(c, empty_img()), Err(InputError, "batch is empty")),
    "DACLIPClassify/no-labels": (lambda c: _classify(c, img(), " \n ,"), Err(InputError, "no degradation labels")),
    "DACLIPClassify/payload": (lambda c: c.node("DACLIPClassifyDegradation").execute("model", img()),
                               Err(PayloadError, "DACLIP_MODEL.*got str")),
    "DACLIPFromText/gray": (r_from_text_gray, OK),
    "DACLIPFromText/nan": (lambda c: _from_text(c, nan_img()), Err(InputError, "not finite")),
    "DACLIPFromText/empty-label": (lambda c: _from_text(c, img(), "   ", ""), Err(InputError, "label is empty")),
})


# ---------------------------------------------------------------- IR-SDE
def _restore(ctx, image, embeds=None, daclip=None, tile=0, overlap=64, net=None, tile_mode="tiles"):
    net = net if net is not None else ctx.payload("irsde")
    return ctx.node("DACLIPRestore").execute(net, image, daclip, embeds, "posterior", 0, tile, overlap,
                                             tile_mode).args[0]


def r_restore_shapes(ctx):
    x = img(1, 10, 14, 4)
    out = finite_image(_restore(ctx, x, embeds=ctx.embeds()), (1, 10, 14, 4))
    assert torch.equal(out[..., 3], x[..., 3])  # alpha passes through
    finite_image(_restore(ctx, img(1, 9, 9, 1), daclip=ctx.payload("daclip")), (1, 9, 9, 3))
    finite_image(_restore(ctx, img(1, 1, 1), embeds=ctx.embeds()), (1, 1, 1, 3))
    finite_image(_restore(ctx, img(2, 2, 70), embeds=ctx.embeds()), (2, 2, 70, 3))


def r_irsde_renamed(ctx):
    """A safetensors file named .pth is read by content (was: 'a pickle that needs globals outside the allow-list')."""
    assert ctx.node("IRSDELoader").execute(ctx.files["irsde_renamed"].name).args[0].arch == "irsde"


def r_restore_overlap_ge_tile(ctx):
    """tile 64 with overlap 64 on 80x96: 4 tiles per step (was 561: the stride collapsed to one pixel)."""
    with forward_calls(ctx.payload("irsde").patcher.model) as calls:
        finite_image(_restore(ctx, img(1, 80, 96), embeds=ctx.embeds(), tile=64, overlap=64), (1, 80, 96, 3))
    assert len(calls) == 2 * 4 and set(calls) == {(1, 3, 64, 64)}, calls  # 2 steps (short schedule) x 4 tiles


NODE_ROWS.update({
    "IRSDELoader/truncated": (lambda c: c.node("IRSDELoader").execute(c.files["irsde_cut"].name),
                              Err(CheckpointError, r"broken_cut\.pth': it is a safetensors file cut off")),
    "IRSDELoader/wrong-family": (lambda c: c.node("IRSDELoader").execute(c.files["irsde_wrong"].name),
                                 Err(WrongModelError, r"actually_daclip.*not a IR-SDE.*DA-CLIP.*models/irsde")),
    "IRSDELoader/safetensors-named-pth": (r_irsde_renamed, OK),
    "DACLIPRestore/rgba-gray-1x1-elongated": (r_restore_shapes, OK),
    "DACLIPRestore/overlap>=tile": (r_restore_overlap_ge_tile, OK),
    "DACLIPRestore/nan-image": (lambda c: _restore(c, nan_img(), embeds=c.embeds()),
                                Err(InputError, "image to restore has 16 of 256 pixels")),
    "DACLIPRestore/nan-embeds": (lambda c: _restore(c, img(), embeds=type(c.embeds())(
        torch.full((1, 32), float("nan")), torch.zeros(1, 32))), Err(InputError, "clean DA-CLIP embedding has")),
    "DACLIPRestore/empty": (lambda c: _restore(c, empty_img(), embeds=c.embeds()), Err(InputError, "batch is empty")),
    "DACLIPRestore/mismatched": (lambda c: _restore(c, img(2), embeds=c.embeds(3)),
                                 Err(InputError, "embedding batch has 3 entries but the image batch has 2")),
    "DACLIPRestore/wrong-width": (lambda c: _restore(c, img(), embeds=c.embeds(1, 16)),
                                  Err(ContextMismatchError, "16-wide.*expects 32-wide")),
    "DACLIPRestore/no-conditioning": (lambda c: _restore(c, img()), Err(InputError, "needs DA-CLIP")),
    "DACLIPRestore/tile-too-small": (lambda c: _restore(c, img(), embeds=c.embeds(), tile=16),
                                     Err(InputError, "tile must be at least 32")),
    "DACLIPRestore/tile-too-small-exact": (lambda c: _restore(c, img(), embeds=c.embeds(), tile=8, tile_mode="exact"),
                                           Err(InputError, "tile must be at least 16 pixels in 'exact'")),
    "DACLIPRestore/bad-tile-mode": (lambda c: _restore(c, img(), embeds=c.embeds(), tile_mode="fast"),
                                    Err(InputError, "unknown tile mode")),
    "DACLIPRestore/payload-model": (lambda c: _restore(c, img(), embeds=c.embeds(), net=c.payload("daclip")),
                                    Err(PayloadError, "'irsde_model' input must be a IRSDE_MODEL.*got daclip")),
    "DACLIPRestore/payload-embeds": (lambda c: _restore(c, img(), embeds="embeds"),
                                     Err(PayloadError, "DACLIP_EMBEDS.*got str")),
    "DACLIPRestore/channels-first": (lambda c: _restore(c, channels_first(), embeds=c.embeds()),
                                     Err(InputError, r"\[B,H,W,C\]")),
})


# ---------------------------------------------------------------- DAPE / RAM
def _dape_loader(ctx, ram, dape="none"):
    return ctx.node("DAPELoader").execute(ram, dape)


def _tag(ctx, image, model=None):
    return ctx.node("DAPETagger").execute(model if model is not None else ctx.payload("dape"), image)


def r_tag_shapes(ctx):
    for x in (img(2, 16, 16, 4), img(1, 16, 16, 1), img(1, 1, 1), img(1, 2, 300)):
        tags, _text, payload = _tag(ctx, x).args
        assert len(tags) == x.shape[0] and payload.embeds.shape[0] == x.shape[0]
        assert bool(torch.isfinite(payload.embeds).all())


NODE_ROWS.update({
    "DAPELoader/random-bytes": (lambda c: _dape_loader(c, c.files["dape_random"].name),
                                Err(CheckpointError, r"broken_random\.pth': it is neither safetensors nor a torch")),
    "DAPELoader/wrong-family": (lambda c: _dape_loader(c, c.files["dape_wrong"].name),
                                Err(WrongModelError, r"actually_ssen.*not a RAM tagger.*SSEN")),
    "DAPELoader/lora-as-ram": (lambda c: _dape_loader(c, "DAPE.pth"), Err(WrongModelError, "is a DAPE LoRA file")),
    "DAPELoader/ram-as-lora": (lambda c: _dape_loader(c, "ram_swin_large_14m.pth", c.files["dape_wrong"].name),
                               Err(WrongModelError, r"actually_ssen.*not a DAPE LoRA file")),
    "DAPELoader/strict-load": (lambda c: _dape_loader(c, c.files["ram_misfit"].name, "DAPE.pth"),  # was RuntimeError
                               Err(StrictLoadError, r"misfit_ram\.pth' does not fit the RAM.*1 unexpected.*leftover")),
    "DAPETagger/rgba-gray-1x1-elongated": (r_tag_shapes, OK),
    "DAPETagger/nan": (lambda c: _tag(c, nan_img()), Err(InputError, "image to tag has 16 of 256")),  # was no tags
    "DAPETagger/empty": (lambda c: _tag(c, empty_img()), Err(InputError, "batch is empty")),
    "DAPETagger/channels-first": (lambda c: _tag(c, channels_first()), Err(InputError, r"\[B,H,W,C\]")),
    "DAPETagger/payload": (lambda c: _tag(c, img(), c.payload("ssen")),
                           Err(PayloadError, "'dape_model' input must be a DAPE_MODEL.*got ssen")),
})


# ---------------------------------------------------------------- SSEN
def _sr(ctx, image, ref=None, tile=0, overlap=16, model=None):
    model = model if model is not None else ctx.payload("ssen")
    return ctx.node("SSENReferenceSR").execute(model, image, ref, tile, overlap).args[0]


def _offsets(ctx, image, ref=None):
    return ctx.node("SSENOffsetMap").execute(ctx.payload("ssen"), image, ref, 8).args


def r_sr_shapes(ctx):
    x = img(1, 8, 12, 4)
    out = finite_image(_sr(ctx, x), (1, 32, 48, 4))
    assert bool((out[..., 3] >= 0).all())
    finite_image(_sr(ctx, img(2, 8, 8, 1), img(1, 5, 50)), (2, 32, 32, 3))
    finite_image(_sr(ctx, img(1, 4, 120)), (1, 16, 480, 3))


def r_sr_overlap_ge_tile(ctx):
    """tile 16 with overlap 16 on 32x40: 3 x 4 = 12 tiles (was 17 x 25 = 425, stride 1)."""
    with forward_calls(ctx.payload("ssen").patcher.model) as calls:
        finite_image(_sr(ctx, img(1, 32, 40), tile=16, overlap=16), (1, 128, 160, 3))
    assert len(calls) == 12 and set(calls) == {(1, 3, 16, 16)}, (len(calls), set(calls))


def r_offsets_gray(ctx):
    points, heat, _scale = _offsets(ctx, img(1, 8, 8, 1))
    finite_image(points, (1, 32, 32, 3))
    finite_image(heat, (1, 32, 32, 3))


def _ssen_loader(ctx, key):
    return ctx.node("SSENLoader").execute(ctx.files[key].name)


NODE_ROWS.update({
    "SSENLoader/empty-file": (lambda c: _ssen_loader(c, "ssen_empty"),
                              Err(CheckpointError, r"broken_empty\.safetensors': the file is empty")),
    "SSENLoader/wrong-family": (lambda c: _ssen_loader(c, "ssen_wrong"),
                                Err(WrongModelError, r"actually_irsde\.pth' is not a SSEN.*models/ssen")),
    "SSENLoader/strict-load": (lambda c: _ssen_loader(c, "ssen_misfit"),  # was a RuntimeError without the file
                               Err(StrictLoadError, r"misfit\.safetensors' does not fit the SSEN.*1 unexpected")),
    "SSENReferenceSR/rgba-gray-elongated": (r_sr_shapes, OK),
    "SSENReferenceSR/overlap>=tile": (r_sr_overlap_ge_tile, OK),
    "SSENReferenceSR/1x1": (lambda c: _sr(c, img(1, 1, 1)), Err(InputError, r"the image is 1×1 pixels; SSEN needs")),
    "SSENReferenceSR/nan-patch": (lambda c: _sr(c, nan_img(h=12, w=12)),  # was: the whole output NaN
                                  Err(InputError, "the image has 16 of 144 pixels that are not finite")),
    "SSENReferenceSR/nan-reference": (lambda c: _sr(c, img(1, 8, 8), nan_img(h=20, w=20)),
                                      Err(InputError, "the reference has 16 of 400 pixels")),
    "SSENReferenceSR/empty": (lambda c: _sr(c, empty_img()), Err(InputError, "batch is empty")),
    "SSENReferenceSR/mismatched": (lambda c: _sr(c, img(2, 8, 8), img(3, 8, 8)),
                                   Err(InputError, "reference batch has 3 entries but the image batch has 2")),
    "SSENReferenceSR/payload": (lambda c: _sr(c, img(), model=c.payload("daclip")),
                                Err(PayloadError, "'ssen_model' input must be a SSEN_MODEL.*got daclip")),
    "SSENOffsetMap/gray": (r_offsets_gray, OK),
    "SSENOffsetMap/1x1": (lambda c: _offsets(c, img(1, 1, 1)), Err(InputError, "SSEN needs at least")),
    "SSENOffsetMap/nan": (lambda c: _offsets(c, nan_img(h=8, w=8)), Err(InputError, "the image has 16 of 64")),
    "SSENOffsetMap/empty": (lambda c: _offsets(c, empty_img()), Err(InputError, "batch is empty")),
})


# ---------------------------------------------------------------- SeeSR (core functions)
@pytest.fixture(scope="module")
def seesr_models():
    from aware_restore.core.seesr import load_seesr

    return load_seesr(FIX / "seesr")


def _seesr_inputs(b=1, h=8, w=8, emb_width=512):
    g = torch.Generator().manual_seed(0)
    return {"lr_latent": torch.randn(b, 4, h, w, generator=g), "cond_image": torch.rand(b, 3, 8 * h, 8 * w, generator=g),
            "positive": torch.randn(1, 77, 32, generator=g), "negative": torch.randn(1, 77, 32, generator=g),
            "image_embeds": torch.randn(1, 145, emb_width, generator=g)}


def _sample(models, tile=None, overlap=4, **change):
    from aware_restore.core.seesr import SamplerOptions, sample

    inp = {**_seesr_inputs(), **change}
    return sample(*models, **inp, generator=torch.Generator().manual_seed(1),
                  opts=SamplerOptions(steps=1, tile_size=tile, tile_overlap=overlap))


def _upscale(models, image, process=64, tile=None, overlap=32, embeds_b=None):
    from aware_restore.core.ram import DapeEmbeds
    from aware_restore.core.seesr import SamplerOptions, UpscaleOptions, upscale

    def vae_encode(x):
        z = F.avg_pool2d(x, 8)
        return torch.cat([z, z[:, :1]], 1)

    b = image.shape[0] if embeds_b is None else embeds_b
    embeds = DapeEmbeds(torch.randn(max(b, 1), 145, 512)[:b], tuple("a photo" for _ in range(b)))
    opts = UpscaleOptions(upscale=4, process_size=process,
                          sampler=SamplerOptions(steps=1, tile_size=tile, tile_overlap=overlap))
    return upscale(image, *models, encode_text=lambda texts: torch.zeros(1, 77, 32), vae_encode=vae_encode,
                   vae_decode=lambda z: F.interpolate(z[:, :3], scale_factor=8), dape_embeds=embeds, options=opts)


def r_seesr_elongated_latent(models):
    """An elongated latent (8x40) with tile 16 / overlap 16: the tile actually used is 8, its overlap 4 (was
    'tile overlap 16 must be in [0, tile size 16)')."""
    out = _sample(models, tile=16, overlap=16, **{k: v for k, v in _seesr_inputs(h=8, w=40).items()
                                                  if k in ("lr_latent", "cond_image")})
    assert out.shape == (1, 4, 8, 40) and bool(torch.isfinite(out).all())


def r_seesr_upscale_1x1_elongated(models):
    finite_image(_upscale(models, torch.rand(1, 3, 1, 1)), (1, 3, 4, 4))
    finite_image(_upscale(models, torch.rand(1, 3, 2, 40), tile=8, overlap=32), (1, 3, 8, 160))


SEESR_ROWS = {
    "SeeSR-core/elongated-latent-tiles": (r_seesr_elongated_latent, OK),
    "SeeSR-core/upscale-1x1-and-elongated": (r_seesr_upscale_1x1_elongated, OK),
    "SeeSR-core/nan-condition": (lambda m: _sample(m, cond_image=torch.full((1, 3, 64, 64), float("nan"))),
                                 Err(InputError, "condition image has 4096 of 4096 pixels")),
    "SeeSR-core/nan-dape-embeds": (lambda m: _sample(m, image_embeds=torch.full((1, 145, 512), float("nan"))),
                                   Err(InputError, "DAPE embeddings has")),
    "SeeSR-core/dape-width": (lambda m: _sample(m, image_embeds=torch.randn(1, 145, 256)),  # was a matmul error
                              Err(ContextMismatchError, r"DAPE embeddings must be \[B, N, 512\].*256")),
    "SeeSR-core/mismatched": (lambda m: _sample(m, cond_image=torch.rand(2, 3, 64, 64), lr_latent=torch.randn(3, 4, 8, 8)),
                              Err(InputError, "condition image batch has 2 entries but the image batch has 3")),
    "SeeSR-core/upscale-nan": (lambda m: _upscale(m, torch.full((1, 3, 4, 4), float("nan"))),
                               Err(InputError, "image to upscale has 16 of 16 pixels")),
    "SeeSR-core/upscale-empty": (lambda m: _upscale(m, torch.rand(0, 3, 4, 4)), Err(InputError, "empty")),
    "SeeSR-core/upscale-gray": (lambda m: finite_image(_upscale(m, torch.rand(1, 1, 4, 4)), (1, 3, 16, 16)), OK),
    "SeeSR-core/upscale-rgba": (lambda m: finite_image(_upscale(m, torch.rand(1, 4, 4, 4)), (1, 4, 16, 16)), OK),
}
SEESR_GAPS: dict[str, str] = {}  # rows of known gaps (strict xfail); none left


# ---------------------------------------------------------------- running a row
def _expect(outcome, run):
    if outcome is OK:
        run()
        return
    with pytest.raises(Exception) as info:
        run()
    exc = info.value
    assert isinstance(exc, (AwareRestoreError, FileNotFoundError)), \
        f"raw library error {type(exc).__module__}.{type(exc).__name__}: {exc}"
    assert isinstance(exc, outcome.cls), f"{type(exc).__name__} instead of {outcome.cls.__name__}: {exc}"
    assert re.search(outcome.pattern, str(exc)), f"{outcome.pattern!r} not in: {exc}"
    assert "\n" not in str(exc).strip(), "the message should be one line"


@pytest.mark.parametrize("row", sorted(NODE_ROWS))
def test_node(row, ctx, short_irsde):
    fn, outcome = NODE_ROWS[row]
    _expect(outcome, lambda: fn(ctx))


@pytest.mark.parametrize("row", [pytest.param(r, marks=pytest.mark.xfail(reason=SEESR_GAPS[r], strict=True))
                                 if r in SEESR_GAPS else r for r in sorted(SEESR_ROWS)])
def test_seesr_core(row, seesr_models):
    fn, outcome = SEESR_ROWS[row]
    _expect(outcome, lambda: fn(seesr_models))


def test_every_node_has_rows(comfy_env):
    """Each node of the pack appears in the table."""
    covered = {r.split("/")[0] for r in NODE_ROWS}
    aliases = {"DACLIPClassifyDegradation": "DACLIPClassify", "DACLIPDegradationFromText": "DACLIPFromText"}
    missing = {n for n in comfy_env.node_classes if aliases.get(n, n) not in covered}
    assert not missing, missing


# ================================================================================================ CLI rows
class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def cli(argv: list[str]) -> tuple[int, list[str], str]:
    """Run ``aware-restore argv`` in-process: (exit code, error lines, log text at debug level)."""
    from aware_restore.cli import main

    cap = _Capture()
    logger = logging.getLogger("aware_restore")
    old_level = logger.level
    logger.addHandler(cap)
    logger.setLevel(logging.DEBUG)
    try:
        try:
            rc = main(argv)
            extra: list[str] = []
        except SystemExit as exc:  # argparse and the commands' own usage errors
            rc = exc.code if isinstance(exc.code, int) else 1
            extra = [] if isinstance(exc.code, int) or exc.code is None else [str(exc.code)]
    finally:
        logger.removeHandler(cap)
        logger.setLevel(old_level)
    errors = [r.getMessage() for r in cap.records if r.levelno >= logging.ERROR] + extra
    return rc, errors, "\n".join(r.getMessage() for r in cap.records)


def png(path: Path, h: int, w: int, mode: str = "RGB") -> str:
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = np.random.default_rng(h * 1000 + w).integers(0, 256, (h, w, channels), dtype=np.uint8)
    Image.fromarray(arr[..., 0] if mode == "L" else arr, mode).save(path)
    return str(path)


@pytest.fixture(scope="module")
def clidir(tmp_path_factory, comfy_env, broken):
    root = tmp_path_factory.mktemp("bad_cli")
    files = {
        "rgb": png(root / "rgb.png", 12, 16), "rgba": png(root / "rgba.png", 12, 16, "RGBA"),
        "gray": png(root / "gray.png", 9, 9, "L"), "one": png(root / "one.png", 1, 1),
        "long": png(root / "long.png", 4, 120), "mid": png(root / "mid.png", 32, 40),
        "sliver": png(root / "sliver.png", 2, 40),
    }
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n but then nothing")
    files["broken"] = str(root / "broken.png")
    (root / "empty.pth").write_bytes(b"")
    files["empty"] = str(root / "empty.pth")
    files["models"] = str(comfy_env.models_dir)
    files["out"] = str(root / "out.png")
    files["root"] = str(root)
    return files


def _sd2(f) -> str:
    sd2 = Path(f["root"]) / "sd2"
    if not sd2.exists():
        write_tiny_sd2(sd2)
    return str(sd2)


def _cli_seesr_elongated(f):
    """2x40 at process size 64: a 8x160 latent; tile 8 / overlap 32 uses an overlap of 4 (was 'tile overlap 32 must
    be smaller than the tile 8')."""
    rc, errors, _ = cli(["--models-dir", f["models"], "seesr", f["sliver"], "--out", f["out"], "--sd2", _sd2(f),
                         "--steps", "1", "--process-size", "64", "--tile", "8", "--overlap", "32"])
    assert rc == 0, errors
    assert Image.open(f["out"]).size == (160, 8)


def _cli_ok(argv_fn, check=None):
    def run(f):
        rc, errors, log = cli(argv_fn(f))
        assert rc == 0, errors
        if check is not None:
            check(f, log)
    return run


def _ssen_tiles(f, log):
    totals = {int(m.group(1)) for m in re.finditer(r"tile \d+/(\d+)", log)}
    assert totals == {12}, totals  # tile 16 / overlap 16 on 32x40 (was 425 tiles)
    assert Image.open(f["out"]).size == (160, 128)


def _restore_tiles(f, log):
    assert Image.open(f["out"]).size == (80, 64)


def M(f):
    return ["--models-dir", f["models"]]


def _files(f, folder):
    return str(Path(f["models"]) / folder)


CLI_ROWS = {
    # ---------------------------------------------------------------- info / convert / download
    "info/broken-files-listed": (_cli_ok(lambda f: [*M(f), "info"]), OK),
    "convert/empty-file": (lambda f: [f["empty"], str(Path(f["root"]) / "o.safetensors")],
                           CliErr(r"empty\.pth': the file is empty")),
    "convert/html-file": (lambda f: [_files(f, "daclip") + "/broken_text.pt", str(Path(f["root"]) / "o.safetensors")],
                          CliErr("it is a web page")),
    "convert/unknown-model": (lambda f: [str(FIX / "ram" / "io.safetensors"), str(Path(f["root"]) / "o.safetensors")],
                              CliErr("is not a model this pack knows")),
    "convert/bad-output-name": (lambda f: [str(FIX / "irsde" / "irsde_unet_tiny.safetensors"), "x.pth"],
                                CliErr("must end in .safetensors")),
    "download/unknown-name": (lambda f: [*M(f), "download", "nope.pth"], CliErr("known files: daclip_ViT-B-32.pt")),
    # ---------------------------------------------------------------- classify
    "classify/broken-image": (lambda f: [*M(f), "classify", f["broken"], "--model",
                                         _files(f, "daclip") + "/daclip_tiny.safetensors"],
                              CliErr(r"cannot read the image '.*broken\.png'")),
    "classify/missing-image": (lambda f: [*M(f), "classify", "nowhere.png", "--model",
                                          _files(f, "daclip") + "/daclip_tiny.safetensors"],
                               CliErr("image file not found: 'nowhere.png'")),
    "classify/empty-model": (lambda f: [*M(f), "classify", f["rgb"], "--model", f["empty"]],
                             CliErr("the file is empty")),
    "classify/wrong-family": (lambda f: [*M(f), "classify", f["rgb"], "--model",
                                         _files(f, "irsde") + "/universal-ir.pth"],
                              CliErr("not a DA-CLIP")),
    "classify/rgba-gray-1x1-elongated": (_cli_ok(lambda f: [*M(f), "classify", f["rgba"], f["gray"], f["one"],
                                                          f["long"], "--model",
                                                          _files(f, "daclip") + "/daclip_tiny.safetensors"]), OK),
    # ---------------------------------------------------------------- restore (IR-SDE)
    "restore/truncated-model": (lambda f: [*M(f), "restore", f["rgb"], "--out", f["out"], "--model",
                                           _files(f, "irsde") + "/broken_cut.pth"], CliErr("cut off")),
    "restore/wrong-family": (lambda f: [*M(f), "restore", f["rgb"], "--out", f["out"], "--model",
                                        _files(f, "daclip") + "/daclip_tiny.safetensors"], CliErr("not a IR-SDE")),
    "restore/wrong-daclip": (lambda f: [*M(f), "restore", f["rgb"], "--out", f["out"], "--daclip",
                                        _files(f, "irsde") + "/universal-ir.pth"], CliErr("not a DA-CLIP")),
    "restore/broken-image": (lambda f: [*M(f), "restore", f["broken"], "--out", f["out"], "--daclip",
                                        _files(f, "daclip") + "/daclip_tiny.safetensors"],
                             CliErr("cannot read the image")),
    "restore/overlap>=tile-rgba": (_cli_ok(lambda f: [*M(f), "restore", png(Path(f["root"]) / "big4.png", 64, 80, "RGBA"),
                                                      "--out", f["out"], "--tile", "48", "--overlap", "64", "--daclip",
                                                      _files(f, "daclip") + "/daclip_tiny.safetensors"],
                                           _restore_tiles), OK),
    # ---------------------------------------------------------------- tag / tag-convert (RAM / DAPE)
    "tag/broken-image": (lambda f: [*M(f), "tag", f["broken"]], CliErr("cannot read the image")),
    "tag/random-bytes-ram": (lambda f: [*M(f), "tag", f["rgb"], "--ram", _files(f, "dape") + "/broken_random.pth"],
                             CliErr("neither safetensors nor a torch checkpoint")),
    "tag/wrong-family-ram": (lambda f: [*M(f), "tag", f["rgb"], "--ram", _files(f, "daclip") + "/daclip_tiny.safetensors"],
                             CliErr("not a RAM tagger")),
    "tag/wrong-family-dape": (lambda f: [*M(f), "tag", f["rgb"], "--dape", _files(f, "irsde") + "/universal-ir.pth"],
                              CliErr("not a DAPE LoRA file")),
    "tag/rgba-gray-1x1-elongated": (_cli_ok(lambda f: [*M(f), "tag", f["rgba"], f["gray"], f["one"], f["long"]]), OK),
    "tag-convert/empty-ram": (lambda f: ["tag-convert", f["empty"], str(Path(f["root"]) / "r.safetensors")],
                              CliErr("the file is empty")),
    "tag-convert/bad-output-name": (lambda f: ["tag-convert", _files(f, "dape") + "/ram_swin_large_14m.pth", "r.pth"],
                                    CliErr("must end in .safetensors")),
    # ---------------------------------------------------------------- seesr
    "seesr/no-seesr-folder": (lambda f: ["--models-dir", f["root"], "seesr", f["rgb"], "--out", f["out"], "--sd2",
                                         f["root"]], CliErr(r"unet/ \+ controlnet/")),
    "seesr/no-sd2": (lambda f: [*M(f), "seesr", f["rgb"], "--out", f["out"], "--sd2", f["root"]],
                     CliErr("needs vae/ and text_encoder/")),
    "seesr/empty-ram": (lambda f: [*M(f), "seesr", f["rgb"], "--out", f["out"], "--sd2", _sd2(f), "--ram",
                                   f["empty"]], CliErr("the file is empty")),
    "seesr/broken-image": (lambda f: [*M(f), "seesr", f["broken"], "--out", f["out"], "--sd2", _sd2(f)],
                           CliErr("cannot read the image")),
    "seesr/elongated-tiles": (_cli_seesr_elongated, OK),
    # ---------------------------------------------------------------- ssen / train-ssen
    "ssen/broken-image": (lambda f: ["ssen", f["broken"], "--out", f["out"], "--model",
                                     _files(f, "ssen") + "/ssen_tiny.safetensors"], CliErr("cannot read the image")),
    "ssen/empty-model": (lambda f: ["ssen", f["rgb"], "--out", f["out"], "--model", f["empty"]],
                         CliErr("the file is empty")),
    "ssen/wrong-family": (lambda f: ["ssen", f["rgb"], "--out", f["out"], "--model",
                                     _files(f, "irsde") + "/universal-ir.pth"], CliErr("not a SSEN")),
    "ssen/1x1": (lambda f: ["ssen", f["one"], "--out", f["out"], "--model", _files(f, "ssen") + "/ssen_tiny.safetensors"],
                 CliErr("SSEN needs at least 4×4")),
    "ssen/overlap>=tile": (_cli_ok(lambda f: ["-v", "ssen", f["mid"], "--out", f["out"], "--tile", "16", "--overlap",
                                              "16", "--model", _files(f, "ssen") + "/ssen_tiny.safetensors"],
                                   _ssen_tiles), OK),
    "ssen/elongated": (_cli_ok(lambda f: ["ssen", f["long"], "--out", f["out"], "--model",
                                          _files(f, "ssen") + "/ssen_tiny.safetensors"]), OK),
    "ssen/gray-with-rgba-reference": (_cli_ok(lambda f: ["ssen", f["gray"], "--ref", f["rgba"], "--out", f["out"],
                                                         "--model", _files(f, "ssen") + "/ssen_tiny.safetensors"]), OK),
    "ssen/broken-reference": (lambda f: ["ssen", f["rgb"], "--ref", f["broken"], "--out", f["out"], "--model",
                                         _files(f, "ssen") + "/ssen_tiny.safetensors"],
                                       CliErr(r"cannot read the image '.*broken\.png'")),
    "train-ssen/init-other-family": (lambda f: ["train-ssen", "--out-dir", str(Path(f["root"]) / "run"), "--steps", "1",
                                                "--nf", "8", "--blocks", "2", "--init",
                                                _files(f, "irsde") + "/universal-ir.pth"],
                                     CliErr(r"universal-ir\.pth' is not a SSEN.*IR-SDE")),  # was: 0/156 copied, INFO
}


# ---------------------------------------------------------------- auto (issue 20)
def _auto_dir(f, *keys) -> str:
    folder = Path(f["root"]) / ("auto_" + "_".join(keys))
    folder.mkdir(exist_ok=True)
    for k in keys:
        shutil.copyfile(f[k], folder / Path(f[k]).name)
    return str(folder)


def _auto_models(f) -> list[str]:
    return ["--model", _files(f, "irsde") + "/universal-ir.pth", "--daclip", _files(f, "daclip") + "/daclip_tiny.safetensors"]


def _cli_auto_broken_continues(f):
    out = Path(f["root"]) / "auto_out_broken"
    rc, errors, _ = cli(["auto", _auto_dir(f, "broken", "rgba", "gray", "one", "long"), "--out", str(out),
                         *_auto_models(f), "--degraded", "0", "--full", "0", "--low-resolution", "0"])
    assert rc == 1 and any("broken.png" in e and "cannot read the image" in e for e in errors), errors
    import json

    cars = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert cars["broken"]["status"] == "error"
    assert all(cars[k]["status"] == "done" for k in ("rgba", "gray", "one", "long"))


CLI_ROWS.update({
    "auto/missing-folder": (lambda f: ["auto", str(Path(f["root"]) / "nowhere"), "--out", f["root"], *_auto_models(f)],
                            CliErr("input folder not found")),
    "auto/wrong-family": (lambda f: ["auto", _auto_dir(f, "rgb"), "--out", f["root"], "--model",
                                     _files(f, "daclip") + "/daclip_tiny.safetensors", "--daclip",
                                     _files(f, "daclip") + "/daclip_tiny.safetensors"], CliErr("not a IR-SDE")),
    "auto/broken-rgba-gray-1x1-elongated": (_cli_auto_broken_continues, OK),
})


@pytest.mark.parametrize("row", sorted(CLI_ROWS))
def test_cli(row, clidir, short_irsde):
    fn, outcome = CLI_ROWS[row]
    if outcome is OK:
        fn(clidir)
        return
    argv = fn(clidir)
    if row.startswith("convert/"):
        argv = ["convert", *argv]
    rc, errors, log = cli(argv)
    assert rc != 0, f"exit code 0 for {argv}"
    assert errors, f"no error message (log: {log})"
    assert not any(e.startswith("unexpected ") for e in errors), errors  # a library error the pack did not catch
    assert any(re.search(outcome.pattern, e) for e in errors), (outcome.pattern, errors)
    assert all("Traceback" not in e and "\n" not in e.strip() for e in errors), errors


def test_every_cli_command_has_rows():
    from aware_restore.cli import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    covered = {r.split("/")[0] for r in CLI_ROWS}
    assert set(sub.choices) <= covered, set(sub.choices) - covered


def test_train_ssen_init_needs_a_fitting_ssen_file(tmp_path):
    """--init copies tensors by name; a file that fills too little of the model is an error, not an INFO line
    (before: 'initialised 0/156 tensors', then training from scratch)."""
    from aware_restore.core.checkpoint import save_safetensors
    from aware_restore.core.ssen.model import SSENConfig, SSENet
    from aware_restore.training.ssen.train import _init_from

    model = SSENet(SSENConfig(nf=8, n_pre=1, n_post=1, ref_blocks=1, est_nf=8, groups=1))
    with pytest.raises(WrongModelError, match="not a SSEN"):
        _init_from(model, str(FIX / "irsde" / "irsde_unet_tiny.safetensors"))
    src = SSENet(SSENConfig(nf=8, n_pre=1, n_post=1, ref_blocks=1, est_nf=8, groups=1)).state_dict()
    few = {k: v for k, v in src.items() if k.startswith(("head.", "tail.", "body_conv.", "body_pre."))}
    save_safetensors(few, tmp_path / "few.safetensors")
    with pytest.raises(StrictLoadError, match=r"fills only \d+ of the model's \d+ tensors"):
        _init_from(model, str(tmp_path / "few.safetensors"))
    save_safetensors(src, tmp_path / "all.safetensors")
    _init_from(model, str(tmp_path / "all.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, src[k]), k


def test_seesr_folder_names_cannot_leave_the_models_folder(comfy_env, tmp_path):
    """SeeSRLoader resolves its folder with common.resolve_dir; '../' and absolute names are refused like the file
    loaders refuse them (before: '../../outside' and '/abs/outside' were loaded from outside models/seesr)."""
    from aware_restore.nodes import common

    outside = comfy_env.base / "outside_seesr"
    for part in ("unet", "controlnet"):
        (outside / part).mkdir(parents=True, exist_ok=True)
    try:
        inside = common.resolve_dir("seesr", "seesr", "SeeSR")
        assert inside == (comfy_env.models_dir / "seesr" / "seesr").resolve()
        for name in ("../../outside_seesr", str(outside), "seesr/../../../outside_seesr"):
            with pytest.raises(FileNotFoundError, match=r"SeeSR folder '.*outside_seesr' was not found"):
                common.resolve_dir("seesr", name, "SeeSR")
            loader = comfy_env.node_classes.get("SeeSRLoader")
            if loader is not None:
                with pytest.raises(FileNotFoundError, match="outside_seesr"):
                    loader.execute(name, "auto")
    finally:
        shutil.rmtree(outside)
