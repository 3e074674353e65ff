"""Shared core helpers: image conversion, resizing, padding, tiling and colour fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from aware_restore.core import colorfix
from aware_restore.core import image as im
from aware_restore.core.tiling import blend_window, tile_origins, tiled_apply
from conftest import FIXTURES, make_test_image


def test_comfy_roundtrip_keeps_alpha_and_handles_gray():
    rgba = torch.rand(2, 10, 12, 4)
    rgb, alpha = im.from_comfy(rgba)
    assert rgb.shape == (2, 3, 10, 12) and alpha.shape == (2, 1, 10, 12)
    torch.testing.assert_close(im.to_comfy(rgb, alpha), rgba)
    gray, a = im.from_comfy(torch.rand(1, 5, 6, 1))
    assert gray.shape == (1, 3, 5, 6) and a is None and torch.equal(gray[:, 0], gray[:, 2])
    with pytest.raises(im.ImageInputError, match="1 to 4 channels"):
        im.from_comfy(torch.rand(1, 5, 6, 5))
    with pytest.raises(im.ImageInputError, match="empty"):
        im.from_comfy(torch.rand(0, 5, 6, 3))


def test_alpha_is_resized_to_the_output():
    rgb, alpha = im.from_comfy(torch.rand(1, 8, 8, 4))
    out = im.to_comfy(torch.rand(1, 3, 32, 32), alpha)
    assert out.shape == (1, 32, 32, 4)


def test_load_image_16bit_gray_rgba(tmp_path):
    arr16 = (np.linspace(0, 65535, 20 * 30).reshape(20, 30)).astype(np.uint16)
    Image.fromarray(arr16).save(tmp_path / "g16.png")
    x = im.load_image(tmp_path / "g16.png")
    assert x.shape == (1, 3, 20, 30)
    assert abs(float(x.max()) - 1.0) < 1e-6 and float(x[0, 0, 0, 1]) == pytest.approx(arr16[0, 1] / 65535, abs=1e-6)
    Image.fromarray(make_test_image(12, 14, channels=4)).save(tmp_path / "a.png")
    assert im.load_image(tmp_path / "a.png").shape == (1, 3, 12, 14)
    assert im.load_image(tmp_path / "a.png", keep_alpha=True).shape == (1, 4, 12, 14)


def test_pad_to_multiple_reflect_and_tiny():
    x = torch.arange(30.0).view(1, 1, 5, 6)
    p, size = im.pad_to_multiple(x, 4)
    assert p.shape == (1, 1, 8, 8) and size == (5, 6)
    assert torch.equal(p[..., 5, :6], x[..., 3, :])  # reflect
    tiny, _ = im.pad_to_multiple(torch.ones(1, 3, 2, 3), 16)  # too small to reflect -> replicate
    assert tiny.shape == (1, 3, 16, 16) and torch.all(tiny == 1)
    assert torch.equal(im.crop(p, size), x)


def test_resize_matches_pil_bicubic_within_stated_tolerance():
    src = make_test_image(97, 131, seed=4)
    x = torch.from_numpy(src).permute(2, 0, 1)[None].float() / 255
    for size in [(40, 50), (200, 260)]:
        ours = im.resize(x, size, mode="bicubic", antialias=True, clamp=True)
        pil = np.asarray(Image.fromarray(src).resize((size[1], size[0]), Image.BICUBIC)).astype(np.float32) / 255
        ours_u8 = np.round(ours[0].permute(1, 2, 0).numpy() * 255) / 255
        assert np.abs(ours_u8 - pil).max() <= im.PIL_BICUBIC_TOLERANCE + 1e-6


def test_tile_origins_cover_and_snap():
    assert tile_origins(100, 128, 16) == [0]
    o = tile_origins(300, 128, 32)
    assert o[0] == 0 and o[-1] == 300 - 128 and all(b - a <= 96 for a, b in zip(o, o[1:]))
    assert blend_window(7, 9, "linear", 3).min() > 0 and blend_window(7, 9, "gaussian").min() > 0


@pytest.mark.parametrize("blend", ["gaussian", "linear"])
def test_tiled_apply_is_exact_for_pointwise_models(blend):
    x = torch.rand(2, 3, 150, 170)
    fn = lambda t: torch.nn.functional.interpolate(t * 2 + 1, scale_factor=2, mode="nearest")  # noqa: E731
    calls = []
    out = tiled_apply(fn, x, tile=64, overlap=16, scale=2, blend=blend, progress=lambda d, t: calls.append((d, t)))
    torch.testing.assert_close(out, fn(x), rtol=1e-5, atol=1e-5)
    assert calls[-1][0] == calls[-1][1] > 1
    assert torch.equal(tiled_apply(fn, x[..., :60, :60], tile=64), fn(x[..., :60, :60]))


def test_tiled_apply_halves_tile_on_oom():
    seen = []

    def fn(t):
        seen.append(t.shape[-1])
        if t.shape[-1] > 64:
            raise torch.OutOfMemoryError("fake OOM")
        return t + 1

    x = torch.rand(1, 3, 200, 200)
    out = tiled_apply(fn, x, tile=256, overlap=32, min_tile=32)
    torch.testing.assert_close(out, x + 1)
    assert 200 in seen and max(seen[-3:]) <= 64
    with pytest.raises(torch.OutOfMemoryError):
        tiled_apply(lambda t: (_ for _ in ()).throw(torch.OutOfMemoryError("x")), x, tile=128, min_tile=100)


def test_colorfix_matches_official_functions():
    fx = load_file(str(FIXTURES / "colorfix" / "colorfix.safetensors"))
    content, ref = fx["content"].clone(), fx["reference"].clone()
    torch.testing.assert_close(colorfix.adain(content, ref), fx["adain"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(colorfix.wavelet(content, ref), fx["wavelet"], atol=1e-5, rtol=1e-5)
    # the official PIL wrappers: uint8 in, clamp, truncate to uint8
    c8 = fx["pil.content_u8"].permute(2, 0, 1)[None].float() / 255
    r8 = fx["pil.reference_u8"].permute(2, 0, 1)[None].float() / 255
    for name, fn in (("adain", colorfix.adain), ("wavelet", colorfix.wavelet)):
        out = (fn(c8, r8).clamp(0, 1)[0].permute(1, 2, 0) * 255).to(torch.uint8)
        assert torch.equal(out, fx[f"pil.{name}_u8"]), name


def test_colorfix_is_batch_safe_and_checks_sizes():
    a, b = torch.rand(3, 3, 33, 47), torch.rand(3, 3, 33, 47)
    batched = colorfix.wavelet(a, b)
    for i in range(3):
        torch.testing.assert_close(batched[i:i + 1], colorfix.wavelet(a[i:i + 1], b[i:i + 1]))
    with pytest.raises(ValueError, match="same size"):
        colorfix.adain(a, torch.rand(3, 3, 10, 10))


def test_oom_retry_halves_the_tile_down_to_the_minimum():
    from aware_restore.core.tiling import retry_on_oom

    seen = []

    def run(tile):
        seen.append(tile)
        if len(seen) < 3:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return "ok"

    assert retry_on_oom(run, 96, 160, min_tile=32) == "ok"
    assert seen == [96, 48, 32]
    seen.clear()
    memo: dict = {}  # a caller that runs once per step keeps the tile that fitted
    assert retry_on_oom(run, 96, 160, min_tile=32, memo=memo) == "ok" and seen == [96, 48, 32]
    assert retry_on_oom(run, 96, 160, min_tile=32, memo=memo) == "ok" and seen == [96, 48, 32, 32]
    seen.clear()

    def fail(exc):
        def run_(tile):
            seen.append(tile)
            raise exc
        return run_

    with pytest.raises(torch.OutOfMemoryError):  # nothing smaller to try: the error surfaces
        retry_on_oom(fail(torch.OutOfMemoryError("oom")), None, 24, min_tile=32)
    assert seen == [None]
    with pytest.raises(ValueError, match="boom"):  # other errors are not retried
        retry_on_oom(fail(ValueError("boom")), 96, 128)
    assert seen == [None, 96]


def test_overlap_is_clamped_to_half_the_tile_actually_used():
    from aware_restore.core.tiling import count_tiles, grid

    # overlap >= tile used to collapse the stride to one pixel (561 tiles for 96x80 at tile 64)
    assert count_tiles(80, 96, 64, 64) == 4
    assert count_tiles(1024, 1024, 64, 64) == 31 * 31
    g = grid(16, 1200, 32, 32, square=True)  # elongated: the tile actually used is 16, its overlap 8
    assert (g.th, g.tw, g.overlap) == (16, 16, 8) and len(g) == 1 + -(-(1200 - 16) // 8)


# ------------------------------------------------------------------------------------------ issue 12 (reliability)
def test_tile_counts_stay_small_when_overlap_reaches_the_tile():
    """Before: DACLIPRestore tile 64 / overlap 64 ran 561 tiles per step on 96x80; SSEN tile 16 / overlap 16 ran
    thousands (stride 1)."""
    from aware_restore.core.tiling import count_tiles, effective_overlap

    assert effective_overlap(64, 64) == 32 and effective_overlap(16, 16) == 8 and effective_overlap(16, 3) == 3
    assert count_tiles(80, 96, 64, 64) == 4
    assert count_tiles(64, 80, 16, 16) == 7 * 9
    assert count_tiles(80, 96, 64, 1000) == count_tiles(80, 96, 64, 32)  # any overlap >= tile/2 is the same
    x = torch.rand(1, 3, 80, 96)
    calls = []
    out = tiled_apply(lambda t: calls.append(t.shape) or t * 2, x, tile=64, overlap=64)
    assert len(calls) == 4 and torch.allclose(out, x * 2, atol=1e-6)


@pytest.mark.parametrize("w,h,process", [(16, 1200, 256), (1200, 16, 256), (8, 2048, 256), (8, 2048, 512)])
def test_seesr_latent_tiles_of_elongated_images(w, h, process):
    """Before: 'tile overlap 32 must be smaller than the tile 32' (16x1200 at process 256, 8x2048) — the overlap
    was capped by tile_size, not by the tile actually used (the short side of the latent)."""
    from aware_restore.core.seesr import plan_sizes
    from aware_restore.core.seesr.tiles import DEFAULT_OVERLAP, DEFAULT_TILE, latent_grid

    lh, lw = plan_sizes(w, h, 4, process).latent_hw
    g = latent_grid(lh, lw, DEFAULT_TILE, DEFAULT_OVERLAP)
    t = min(DEFAULT_TILE, lh, lw)
    assert (g.th, g.tw, g.overlap) == (t, t, t // 2)
    long = max(lh, lw)
    assert len(g) == 1 + -(-(long - t) // (t - t // 2))  # one row of tiles along the long side, stride t/2
    covered = torch.zeros(lh, lw, dtype=torch.bool)
    for y, x in g.origins:
        covered[y:y + t, x:x + t] = True
    assert bool(covered.all())


def test_check_finite_names_the_input_and_counts_pixels():
    x = torch.rand(2, 3, 8, 8)
    assert im.check_finite(x, "image") is x
    x[0, :, :4, :4] = float("nan")  # 16 pixels, 48 values
    x[1, 1, 0, 0] = float("inf")
    with pytest.raises(im.InputError, match=r"the reference image has 17 of 128 pixels that are not finite \(NaN "
                                            r"and infinite\)"):
        im.check_finite(x, "reference image")
    with pytest.raises(im.InputError, match="3 of 6 values"):
        im.check_finite(torch.tensor([[1.0, float("nan"), 2.0], [float("-inf"), float("nan"), 0.0]]), "embedding")
    assert im.check_finite(None, "nothing") is None


def test_colorfix_refuses_non_finite_input_and_handles_one_pixel():
    """Before: NaN in → NaN out (silently); adain on a 1x1 image returned NaN (unbiased variance of one pixel)."""
    one, ref = torch.rand(2, 3, 1, 1), torch.rand(2, 3, 1, 1)
    out = colorfix.adain(one, ref)
    assert bool(torch.isfinite(out).all())
    torch.testing.assert_close(out, ref)  # one pixel: its colour becomes the reference's mean
    assert bool(torch.isfinite(colorfix.wavelet(one, ref)).all())
    assert bool(torch.isfinite(colorfix.color_fix_to(torch.rand(1, 3, 1, 1), torch.rand(1, 3, 5, 7), "adain")).all())
    nan = torch.rand(1, 3, 8, 8)
    nan[..., 2, 3] = float("nan")
    with pytest.raises(im.InputError, match="image to colour-fix has 1 of 64 pixels"):
        colorfix.color_fix(nan, torch.rand(1, 3, 8, 8), "wavelet")
    with pytest.raises(im.InputError, match="colour reference has 1 of 64 pixels"):
        colorfix.color_fix_to(torch.rand(1, 3, 8, 8), nan, "adain")


def test_channels_first_image_error_names_the_comfy_layout():
    """Before: 'images must have 1 to 4 channels (...), got 32' — the expected [B,H,W,C] layout was not named."""
    with pytest.raises(im.ImageInputError) as err:
        im.from_comfy(torch.rand(1, 3, 32, 32))
    msg = str(err.value)
    assert "[B,H,W,C]" in msg and "channels-first" in msg and "(1, 3, 32, 32)" in msg


def test_unreadable_image_file_is_an_input_error_naming_it(tmp_path):
    """Before: PIL's UnidentifiedImageError (an OSError the CLI showed as a traceback)."""
    bad = tmp_path / "photo.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(im.ImageInputError, match="cannot read the image .*photo.png"):
        im.load_image(bad)
    with pytest.raises(FileNotFoundError, match="nothing.png"):
        im.load_image(tmp_path / "nothing.png")


# ------------------------------------------------------------------------------------------ issue 18 item 6 / 19
class _DeviceDtypes(torch.utils._python_dispatch.TorchDispatchMode):
    """Records (op, dtype) of every tensor an operation produces on the compute device (``meta`` here, standing in
    for an accelerator: the host is the CPU)."""

    def __init__(self):
        super().__init__()
        self.seen: list[tuple[str, torch.dtype]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.device.type != "cpu":
                self.seen.append((str(func), t.dtype))
        return out


@pytest.mark.parametrize("out_dtype", [torch.float16, torch.float32])
def test_tile_blends_put_no_float64_on_the_device(out_dtype):
    """SeeSR's Gaussian map is float64 (official), but it is made on the host and cast once: on MPS a float64
    tensor fails, on CUDA every product with it would silently run in float64."""
    from aware_restore.core.seesr.tiles import blend_latent_tiles, latent_grid
    from aware_restore.core.tiling import blend_tiles, grid

    dev = torch.device("meta")
    x = torch.empty(2, 4, 40, 56, device=dev, dtype=out_dtype)
    g = latent_grid(40, 56, 24, 8)
    assert len(g) > 1
    inputs: list[torch.dtype] = []

    def tiles(origins):
        outs = [[x[..., y:y + g.th, xx:xx + g.tw] * 2, x[..., y:y + g.th, xx:xx + g.tw] + 1] for y, xx in origins]
        inputs.extend(p.dtype for o in outs for p in o)
        return outs

    with _DeviceDtypes() as mode:
        a, b = blend_latent_tiles(tiles, g, dev, group=2)
        c = blend_tiles(lambda t, _pos: t.repeat_interleave(2, -1).repeat_interleave(2, -2), x, grid(40, 56, 24, 8),
                        scale=2.0)
    assert {a.dtype, b.dtype, c.dtype} == {torch.float32} and a.device == c.device == dev
    assert c.shape == (2, 4, 80, 112)
    assert set(inputs) == {out_dtype}
    assert mode.seen and not [s for s in mode.seen if s[1] == torch.float64], mode.seen


def test_seesr_noise_prediction_puts_no_float64_on_the_device():
    """The tiled noise prediction of SeeSR's sampler (fp16 networks on the device): everything the networks get
    and everything computed there is float16/float32."""
    from aware_restore.core.seesr.sampler import Conditioning, SamplerOptions, predict_noise

    dev = torch.device("meta")
    seen_inputs: list[torch.dtype] = []

    class Net(torch.nn.Module):
        def __init__(self, control: bool):
            super().__init__()
            self.p = torch.nn.Parameter(torch.empty(1, device=dev, dtype=torch.float16))
            self.control = control

        def forward(self, x, t, encoder_hidden_states, image_encoder_hidden_states, **kw):
            seen_inputs.extend(a.dtype for a in (x, encoder_hidden_states, image_encoder_hidden_states,
                                                 *[v for v in kw.values() if isinstance(v, torch.Tensor)]))
            return (None, None) if self.control else (x * self.p,)

    x = torch.empty(2, 4, 40, 56, device=dev)
    cond = Conditioning(torch.empty(2, 77, 8, device=dev), torch.empty(2, 145, 512, device=dev),
                        torch.empty(2, 3, 320, 448, device=dev))
    with _DeviceDtypes() as mode:
        eps = predict_noise(Net(False), Net(True), x, 1, cond, SamplerOptions(tile_size=24, tile_overlap=8))
    assert eps.dtype == torch.float32 and eps.shape == x.shape
    assert set(seen_inputs) == {torch.float16}
    assert mode.seen and not [s for s in mode.seen if s[1] == torch.float64], mode.seen
