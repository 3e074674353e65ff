"""The options of the SSEN training recipe (``train-ssen``) and the reference kinds it mixes."""

from __future__ import annotations

from dataclasses import dataclass

from ...core.ssen.model import SSENConfig

KINDS = ("self", "exact", "warped", "camera", "partner", "other", "irrelevant")
VAL_MODES = ("self", "zoom0.67", "zoom1.5", "frame5", "irrelevant")  # quick validation during training


@dataclass
class TrainOptions:
    out_dir: str = "ssen_run"
    photos: str | None = None        # prepared package photo set (training/ssen/photos.py)
    hr_dir: str | None = None        # else a folder of HR images; neither: scikit-image's bundled photos
    lr_dir: str | None = None
    ref_dir: str | None = None
    val_dir: str | None = None
    steps: int = 4000
    max_minutes: float = 0.0         # 0: no wall-time budget
    batch: int = 8
    patch: int = 32                  # LR patch side
    lr: float = 4e-4
    min_lr: float = 1e-6
    warm_steps: int = 50             # linear learning-rate warm-up
    offset_lr_scale: float = 0.25    # the offset estimators learn slower (as in EDVR / BasicVSR)
    p_self: float = 0.15
    p_exact: float = 0.10
    p_warped: float = 0.30
    p_camera: float = 0.0            # "warped" through the camera model (lens + motion blur, noise, JPEG)
    p_partner: float = 0.08          # falls back to "warped" for samples without a partner
    p_other: float = 0.07
    p_irrelevant: float = 0.30
    max_shift: float = 16.0          # LR pixels
    rot_deg: float = 5.0
    scale_min: float = 0.7
    scale_max: float = 1.5
    disp_weight: float = 0.005
    grid_weight: float = 2.0         # error energy at the 4-pixel-period grid frequencies (anti-checkerboard)
    harm_weight: float = 0.0         # regions where a reference made the output worse than self-similarity
    init: str | None = None          # start from these weights (shape-compatible tensors copied)
    gan_steps: int = 0
    gan_weight: float = 5e-3
    eval_every: int = 500
    save_every: int = 100
    seed: int = 0
    nf: int = 32
    n_pre: int = 4
    n_post: int = 4
    backbone: str = "edsr"
    est_nf: int = 32
    hr_nf: int = 16
    device: str = "cpu"
    amp: bool = False                # bf16 autocast (CUDA only)
    workers: int = 0                 # batch-generating worker processes (0: in the training process)
    scale_search: bool = False       # the scale/rotation search of the match (training references share the frame)

    def config(self) -> SSENConfig:
        return SSENConfig(nf=self.nf, n_pre=self.n_pre, n_post=self.n_post, backbone=self.backbone,
                          est_nf=self.est_nf, hr_nf=self.hr_nf)
