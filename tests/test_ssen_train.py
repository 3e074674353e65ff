"""The train-ssen recipe on a tiny folder: runs, checkpoints, resumes, exports a loadable model; metrics agree with
scikit-image; the reference-kind curriculum follows its schedule."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from aware_restore.core.ssen import load_ssen
from aware_restore.training.ssen.data import builtin_photos, folder_samples
from aware_restore.training.ssen.metrics import psnr_y, ssim_y
from aware_restore.training.ssen.train import Batcher, TrainOptions


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
            "--save-every", "1", "--gan-steps", "1"]
    assert main(args) == 0
    state = torch.load(tmp_path / "run" / "last.pt", weights_only=True)
    assert state["step"] == 2
    args[args.index("--steps") + 1] = "3"
    assert main(args) == 0  # resumes at step 2 and does one more
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 3
    model = load_ssen(tmp_path / "run" / "ssen.safetensors")
    assert model.config.nf == 8 and model.config.n_pre + model.config.n_post == 2
    assert (tmp_path / "run" / "validation.json").is_file()


def test_reference_curriculum(tmp_path):
    samples = folder_samples(_folder(tmp_path))
    opt = TrainOptions(batch=1, patch=8, warmup=0.25, curriculum=0.35, p_irrelevant=0.25)
    b = Batcher(samples, opt, torch.Generator().manual_seed(0))
    early = {b.item(0.1)[3] for _ in range(200)}
    late = [b.item(1.0)[3] for _ in range(400)]
    assert "irrelevant" not in early and "aligned" in early
    assert 0.15 < late.count("irrelevant") / len(late) < 0.35
    lr, hr, ref, kind = b.item(0.0)
    assert lr.shape == (3, 8, 8) and hr.shape == ref.shape == (3, 32, 32)


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
