"""The train-ssen recipe on a tiny folder: runs, checkpoints, resumes, exports a loadable model; metrics agree with
scikit-image; the reference kinds come in their fractions with the true displacement where it is known; the
photo-set preparation reads Debian packages; the grid ratio sees a checkerboard."""

from __future__ import annotations

import json

import numpy as np
import torch
from aware_restore.core.ssen import load_ssen
from aware_restore.training.ssen.data import builtin_photos
from aware_restore.training.ssen.metrics import psnr_y, ssim_y
from aware_restore.training.ssen.train import Batcher, TrainOptions
from PIL import Image


def _folder(tmp_path):
    hr = tmp_path / "hr"
    hr.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 44, 3), dtype=np.uint8)).save(hr / f"img{i}.png")
    return hr


def test_train_resume_and_export(tmp_path):
    from aware_restore.cli import main

    hr = _folder(tmp_path)
    args = ["train-ssen", "--out-dir", str(tmp_path / "run"), "--hr-dir", str(hr), "--val-dir", str(hr),
            "--steps", "2", "--batch", "2", "--patch", "8", "--nf", "8", "--blocks", "2", "--eval-every", "0",
            "--save-every", "1", "--gan-steps", "1", "--p-camera", "0.5", "--harm-weight", "1"]
    assert main(args) == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 2
    args[args.index("--steps") + 1] = "3"
    assert main(args) == 0  # resumes at step 2 and does one more
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    model = load_ssen(tmp_path / "run" / "ssen.safetensors")
    assert model.config.nf == 8 and model.config.n_pre + model.config.n_post == 2
    assert (tmp_path / "run" / "validation.json").is_file()
    from aware_restore.core.ssen.loader import read_note

    opts = json.loads(read_note(tmp_path / "run" / "ssen.safetensors")["options"])
    assert opts["p_camera"] == 0.5 and opts["harm_weight"] == 1.0


def test_validation_runs_with_the_scale_search_training_leaves_off(tmp_path, monkeypatch):
    from aware_restore.training.ssen import train as train_mod

    seen = []

    def fake_data(opt):
        def validate(model, final):
            seen.append((final, model.scale_search))
            return {}
        return builtin_photos("train")[:2], validate, "test"

    monkeypatch.setattr(train_mod, "_data", fake_data)
    opt = train_mod.TrainOptions(out_dir=str(tmp_path / "run"), steps=2, batch=1, patch=8, nf=8, n_pre=1, n_post=1,
                                 est_nf=8, hr_nf=8, eval_every=1, save_every=10)
    train_mod.train(opt)
    assert opt.scale_search is False and seen == [(False, True), (False, True), (True, True)]


def test_harm_counts_only_regions_a_reference_made_worse():
    from aware_restore.training.ssen.losses import harm

    hr = torch.zeros(1, 3, 16, 16)
    self_sr = torch.full_like(hr, 0.1)
    better = torch.full_like(hr, 0.05)
    assert float(harm(better, self_sr, hr)) == 0.0
    worse = better.clone()
    worse[..., :8, :8] = 0.3  # one 8×8 region of four: 0.2 worse than self there
    sr = worse.requires_grad_()
    h = harm(sr, self_sr.requires_grad_(), hr)
    assert abs(h.item() - 0.2 / 4) < 1e-3
    h.backward()
    assert sr.grad[..., :8, :8].abs().sum() > 0 and float(sr.grad[..., 8:, :].abs().sum()) == 0.0
    assert self_sr.grad is None  # the bar is not moved


def test_reference_kinds_and_true_displacements(tmp_path):
    from aware_restore.core.ssen.match import coarse_flow
    from aware_restore.core.ssen.resample import bicubic_downscale as bicubic_down

    samples = builtin_photos("train")[:3]
    opt = TrainOptions(batch=1, patch=16)
    b = Batcher(samples, opt, torch.Generator().manual_seed(0))
    kinds = [b.item()[5] for _ in range(300)]
    for kind in ("self", "exact", "warped", "other", "irrelevant"):
        share = kinds.count(kind) / len(kinds)
        assert abs(share - getattr(opt, f"p_{kind}")) < 0.08, (kind, share)
    seen = set()
    for _ in range(500):  # both kinds are 40 % of the mix: a bound, not a hang, if the batcher stopped making them
        if {"exact", "warped"} <= seen:
            break
        lr, hr, ref, disp, known, kind = b.item()
        assert lr.shape == (3, 16, 16) and hr.shape == ref.shape == (3, 64, 64) and disp.shape == (2, 16, 16)
        if kind not in ("exact", "warped") or kind in seen:
            continue
        flow, score = coarse_flow(lr[None], bicubic_down(ref[None]))
        m = (known[0] > 0) & (score[0, 0] > 0.9)
        if int(m.sum()) < 20:
            continue
        seen.add(kind)  # the matcher agrees with the displacement the batcher says it made
        assert float((flow[0] - disp).abs()[:, m].median()) < (0.25 if kind == "exact" else 0.75), kind
    assert {"exact", "warped"} <= seen


def test_camera_references_are_degraded_views_with_true_displacements():
    """The ``camera`` kind: the ``warped`` view through the camera model (blur, motion, noise, JPEG) — never the
    clean view — whose displacement the matcher still finds."""
    from aware_restore.core.ssen.match import coarse_flow
    from aware_restore.core.ssen.resample import bicubic_downscale as bicubic_down

    samples = builtin_photos("train")[:3]
    opt = TrainOptions(batch=1, patch=16, p_self=0, p_exact=0, p_warped=0, p_camera=1, p_partner=0, p_other=0,
                       p_irrelevant=0)
    b = Batcher(samples, opt, torch.Generator().manual_seed(1))
    errors = []
    for _ in range(40):
        lr, _, ref, disp, known, kind = b.item()
        assert kind == "camera" and ref.shape == (3, 64, 64)
        assert torch.equal(ref, (ref * 255).round() / 255)  # JPEG-decoded: 8-bit values
        flow, score = coarse_flow(lr[None], bicubic_down(ref[None]))
        m = (known[0] > 0) & (score[0, 0] > 0.9)
        if int(m.sum()) >= 20:
            errors.append(float((flow[0] - disp).abs()[:, m].median()))
    # 16² patches: the matcher misses some (periodic or flat content; the "warped" kind alike, median 0.36)
    assert len(errors) >= 10 and sorted(errors)[len(errors) // 2] < 0.5, errors  # measured 0.36 over 18


def test_metrics_match_skimage():
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    hr = builtin_photos("holdout")[0].hr[None, :, :96, :96]
    sr = (hr + 0.03 * torch.randn(hr.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)

    def y(x):
        x = (x.clamp(0, 1) * 255).round() / 255
        return (16 + (x[0] * torch.tensor([65.481, 128.553, 24.966]).view(3, 1, 1)).sum(0))[4:-4, 4:-4].double()

    ref_psnr = peak_signal_noise_ratio(y(hr).numpy(), y(sr).numpy(), data_range=255)
    ref_ssim = structural_similarity(y(hr).numpy(), y(sr).numpy(), data_range=255, gaussian_weights=True,
                                     sigma=1.5, use_sample_covariance=False)
    assert abs(psnr_y(sr, hr) - ref_psnr) < 1e-6
    assert abs(ssim_y(sr, hr) - ref_ssim) < 2e-3


def test_grid_ratio_sees_a_checkerboard():
    from aware_restore.training.ssen.metrics import grid_ratio

    g = torch.Generator().manual_seed(0)
    smooth = torch.nn.functional.interpolate(torch.rand(1, 3, 16, 16, generator=g), size=(64, 64), mode="bicubic")
    base = torch.full((1, 3, 64, 64), 0.5)
    assert grid_ratio(base + 0.1 * (smooth - 0.5), base) < 2
    grid = torch.zeros(1, 3, 64, 64)
    grid[..., ::4, ::4] = 0.05
    assert grid_ratio(base + 0.1 * (smooth - 0.5) + grid, base) > 5


def test_photo_set_reads_debian_packages(tmp_path):
    """The .deb reader (ar archive, xz data tarball) on a package built here."""
    import io
    import lzma
    import tarfile

    from aware_restore.training.ssen.photos import _deb_files

    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        blob = b"jpeg bytes"
        info = tarfile.TarInfo("./usr/share/backgrounds/a.jpg")
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
    members = [("debian-binary", b"2.0\n"), ("control.tar.xz", lzma.compress(b"")),
               ("data.tar.xz", lzma.compress(data.getvalue()))]
    ar = b"!<arch>\n"
    for name, body in members:
        ar += f"{name + '/':<16}{0:<12}{0:<6}{0:<6}{100644:<8}{len(body):<10}`\n".encode() + body
        ar += b"\n" if len(body) % 2 else b""
    deb = tmp_path / "x_1.0_all.deb"
    deb.write_bytes(ar)
    assert _deb_files(deb, "usr/share/backgrounds/") == {"usr/share/backgrounds/a.jpg": b"jpeg bytes"}


def test_heldout_table_and_summary():
    from aware_restore.training.ssen import heldout

    modes = heldout.MODES
    mean = {"bicubic": 28.0, "bicubic_ssim": 0.8, **{m: 30.0 + i for i, m in enumerate(modes)},
            **{m + "_ssim": 0.85 for m in modes}}
    rows = {"a#0": {"self": 30.0, "zoom2": 31.0}, "b#0": {"self": 30.0, "zoom2": 29.5}}
    res = {"mean": mean, "max_grid": {"self_grid": 2.0}, "rows": rows}
    stereo = {"mean": {"self": 29.0, "partner": 29.5, "partner_ssim": 0.9}, "max_grid": {"partner_grid": 3.0},
              "rows": {"m#0": {"self": 29.0, "partner": 29.5}}}
    text = heldout.table(res, stereo)
    assert "| same scene, 0.5× zoom | 31.00 | +1.00 |" in text
    assert f"| same scene, 2× zoom | {30 + modes.index('zoom2'):.2f} | +{modes.index('zoom2')}.00 | -0.50 |" in text
    assert "| bicubic (no SSEN) | 28.00 | -2.00 | | 0.8000 |" in text
    assert "| +0.50 | +0.50 | 0.9000 |" in text and "partner 3.00" in text.splitlines()[-1]
    assert heldout.summary(res).startswith("bicubic 28.00; self 30.00 (+2.00 vs bicubic); zoom0.5 +1.00")


def test_rephotographed_references_are_never_the_ground_truth():
    """The camera model: the right place and scale, but blur, noise and JPEG — never pixel-identical."""
    from aware_restore.training.ssen.camera import rephotograph
    from aware_restore.training.ssen.heldout import ground_truth

    g = torch.Generator().manual_seed(0)
    scene = torch.nn.functional.interpolate(torch.rand(1, 3, 32, 32, generator=g), size=(256, 256), mode="bicubic",
                                            align_corners=False).clamp(0, 1)[0]
    gt = ground_truth(scene)  # 128²
    ref = rephotograph(scene, (64, 64), (64, 64), 1.0, seed=1)
    assert ref.shape == (1, 3, 64, 64)
    window = gt[None, :, 32:96, 32:96]
    err = (ref - window).abs().mean()
    assert 0.003 < float(err) < 0.05, float(err)
    assert rephotograph(scene, (64, 64), (64, 64), 2.0, seed=1).shape == (1, 3, 128, 128)
    assert rephotograph(scene, (64, 64), (64, 64), 0.5, seed=1).shape == (1, 3, 32, 32)


def test_real_pair_cases_read_the_prepared_layout(tmp_path):
    """video_cases / aloe_cases on a prepared-looking folder (photos.prepare_real_pairs writes it): the frame k later
    is the reference for frame{k}, the right view for the Aloe partner."""
    from aware_restore.training.ssen import heldout
    from aware_restore.training.ssen.photos import VIDEO_OFFSETS, VIDEO_STARTS
    from PIL import Image

    g = torch.Generator().manual_seed(0)

    def save(path, size):
        a = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 12, generator=g), size=size, mode="bicubic",
                                            align_corners=False).clamp(0, 1)
        Image.fromarray((a[0].permute(1, 2, 0) * 255).byte().numpy()).save(path)

    (tmp_path / "video").mkdir()
    (tmp_path / "stereo").mkdir()
    for t in VIDEO_STARTS:
        for k in VIDEO_OFFSETS:
            save(tmp_path / "video" / f"vtest_{t + k:04d}.png", (480, 560))
    for side in ("left", "right"):
        save(tmp_path / "stereo" / f"aloe_{side}.png", (960, 1000))
    video, aloe = heldout.video_cases(tmp_path), heldout.aloe_cases(tmp_path)
    assert len(video) == 2 * len(VIDEO_STARTS) and len(aloe) == 2
    c = video[0]
    assert c["hr"].shape == (3, 192, 192) and c["lr"].shape == (3, 48, 48)
    assert set(c["refs"]) == {"self", "frame1", "frame5", "frame15"} and c["refs"]["frame5"].shape[-1] == 256
    assert aloe[0]["refs"]["partner"].shape[-2] == 192
    assert heldout.video_cases(tmp_path / "missing") == [] and heldout.aloe_cases(tmp_path / "missing") == []
