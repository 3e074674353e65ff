"""``aware-restore ssen`` (×4 reference-based SR) and ``aware-restore train-ssen`` (the training recipe)."""

from __future__ import annotations

import argparse
import logging
import sys

from .common import add_device_options, apply_threads, image_command

log = logging.getLogger(__name__)


def _cmd_ssen(args: argparse.Namespace) -> int:
    from ..core.image import load_image, save_image
    from ..core.ssen.infer import offset_map, super_resolve
    from ..core.ssen.loader import load_ssen

    apply_threads(args)
    model = load_ssen(args.model).to(args.device)
    lr = load_image(args.image)
    ref = load_image(args.ref) if args.ref else None

    def progress(done: int, total: int) -> None:
        log.debug("tile %d/%d", done, total)

    sr = super_resolve(model, lr, ref, tile=args.tile or None, overlap=args.overlap, progress=progress)
    out = save_image(sr[0], args.out)
    if args.offsets:
        points, _ = offset_map(model, lr, ref)
        save_image(points[0], args.offsets)
    sys.stdout.write(f"{out}\n")
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    import torch

    from ..training.ssen.train import TrainOptions, train

    torch.set_num_threads(max(args.threads, 1))
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    photos = args.photos
    if photos and args.prepare_photos:
        from ..training.ssen.photos import prepare_photos

        prepare_photos(photos)
    est_nf = args.est_nf or max(32, args.nf)
    hr_nf = args.hr_nf or max(args.nf // 2, 4)
    opts = TrainOptions(out_dir=args.out_dir, photos=photos, hr_dir=args.hr_dir, lr_dir=args.lr_dir,
                        ref_dir=args.ref_dir, val_dir=args.val_dir, steps=args.steps, max_minutes=args.max_minutes,
                        batch=args.batch, patch=args.patch, lr=args.lr, gan_steps=args.gan_steps,
                        gan_weight=args.gan_weight, eval_every=args.eval_every, save_every=args.save_every,
                        seed=args.seed, nf=args.nf, n_pre=args.blocks // 2, n_post=args.blocks - args.blocks // 2,
                        backbone=args.backbone, est_nf=est_nf, hr_nf=hr_nf, device=device,
                        max_shift=args.max_shift, p_irrelevant=args.p_irrelevant,
                        p_warped=args.p_warped, p_camera=args.p_camera, disp_weight=args.disp_weight,
                        grid_weight=args.grid_weight, harm_weight=args.harm_weight, warm_steps=args.warm_steps,
                        init=args.init, amp=args.amp, workers=args.workers)
    path = train(opts)
    sys.stdout.write(f"{path}\n")
    return 0


def register(subparsers) -> None:
    p = image_command(subparsers, "ssen", "×4 reference-based super-resolution with SSEN (shipped model by default)",
                      "low-resolution input image", "output image path (4× the input size)")
    p.add_argument("--ref", default=None, help="reference image, any size (default: self-similarity mode)")
    p.add_argument("--model", default=None, help="SSEN .safetensors / .pth (default: the shipped small model)")
    p.add_argument("--tile", type=int, default=0, help="tile side in input pixels (0: whole image)")
    p.add_argument("--overlap", type=int, default=16, help="tile overlap in input pixels")
    p.add_argument("--offsets", default=None, help="also write the offset visualisation here")
    add_device_options(p)
    p.set_defaults(func=_cmd_ssen)

    t = subparsers.add_parser("train-ssen", help="train an SSEN model (resumes from OUT_DIR/last.pt)")
    t.add_argument("--out-dir", required=True, help="run folder: last.pt, validation.json, ssen.safetensors")
    t.add_argument("--photos", default=None,
                   help="the package photo set (training/ssen/photos.py); default: scikit-image's bundled photos")
    t.add_argument("--prepare-photos", action="store_true",
                   help="build the photo set in --photos first if it is not there (apt-get / pip download)")
    t.add_argument("--hr-dir", default=None, help="HR training images instead of the photo set")
    t.add_argument("--lr-dir", default=None, help="paired LR images with the same file names (default: bicubic ×4)")
    t.add_argument("--ref-dir", default=None, help="references: CUFED 'ref/' folder or CUFED5 '<id>_k' files")
    t.add_argument("--val-dir", default=None, help="validation HR images")
    t.add_argument("--steps", type=int, default=100000)
    t.add_argument("--max-minutes", type=float, default=0.0, help="wall-time budget (ends the cosine schedule)")
    t.add_argument("--batch", type=int, default=16)
    t.add_argument("--patch", type=int, default=40, help="LR patch side")
    t.add_argument("--lr", type=float, default=4e-4)
    t.add_argument("--gan-steps", type=int, default=0, help="PatchGAN fine-tuning for the last N steps")
    t.add_argument("--gan-weight", type=float, default=5e-3)
    t.add_argument("--max-shift", type=float, default=16.0, help="largest reference shift (LR pixels)")
    t.add_argument("--p-irrelevant", type=float, default=0.30, help="fraction of irrelevant references")
    t.add_argument("--p-warped", type=float, default=0.30,
                   help="fraction of references seen through a random similarity transform")
    t.add_argument("--p-camera", type=float, default=0.0,
                   help="fraction of references: such a view through the camera model (lens and motion blur, "
                        "noise, JPEG)")
    t.add_argument("--disp-weight", type=float, default=0.005,
                   help="weight of the displacement supervision (where the true displacement is known)")
    t.add_argument("--grid-weight", type=float, default=2.0,
                   help="weight of the error energy at the 4-pixel-period grid frequencies (anti-checkerboard)")
    t.add_argument("--harm-weight", type=float, default=0.0,
                   help="weight of the regions where a reference made the output worse than without one")
    t.add_argument("--warm-steps", type=int, default=50, help="linear learning-rate warm-up steps")
    t.add_argument("--init", default=None, help="start from these weights (shape-compatible tensors copied)")
    t.add_argument("--eval-every", type=int, default=2000)
    t.add_argument("--save-every", type=int, default=1000)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--nf", type=int, default=64)
    t.add_argument("--blocks", type=int, default=16, help="backbone residual blocks (split around the fusion)")
    t.add_argument("--backbone", choices=["edsr", "rcan"], default="edsr")
    t.add_argument("--est-nf", type=int, default=0, help="offset-estimator channels (0: 32, or nf when nf > 32)")
    t.add_argument("--hr-nf", type=int, default=0, help="channels of the ×4 output stage (0: nf / 2)")
    t.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA)")
    t.add_argument("--workers", type=int, default=0, help="batch-generating worker processes")
    t.add_argument("--device", default="auto", help="auto: cuda when available, else cpu")
    t.add_argument("--threads", type=int, default=1)
    t.set_defaults(func=_cmd_train)
