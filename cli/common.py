"""What the family commands share: the one-image command (``IMAGE --out OUT``), the ``--device`` / ``--threads``
options and their effect, and the progress logger of long loops."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

log = logging.getLogger(__name__)


def image_command(subparsers, name: str, help: str, image_help: str, out_help: str) -> argparse.ArgumentParser:
    """A sub-command that reads one image and writes one: positional ``image`` and a required ``--out``."""
    p = subparsers.add_parser(name, help=help)
    p.add_argument("image", help=image_help)
    p.add_argument("--out", required=True, help=out_help)
    return p


def add_device_options(p: argparse.ArgumentParser, device: str = "cpu",
                       device_help: str = "torch device, e.g. cpu or cuda") -> None:
    p.add_argument("--device", default=device, help=device_help)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")


def apply_threads(args: argparse.Namespace) -> None:
    """``--threads N`` (N > 0) sets torch's CPU threads; 0 leaves torch's default."""
    if args.threads:
        import torch  # the CLI imports torch only when a command runs (fast --help)

        torch.set_num_threads(args.threads)


def write_image(image, path: str) -> int:
    """Save ``image`` ``[3,H,W]`` (or ``[1,3,H,W]``) to ``path``, print where it went, and return exit code 0."""
    from ..core.image import save_image

    out = save_image(image[0] if image.ndim == 4 else image, path)
    sys.stdout.write(f"{out}\n")
    return 0


def log_steps(what: str = "step", every: int = 10, level: int = logging.INFO) -> Callable[[int, int], None]:
    """A ``progress(done, total)`` callable logging every ``every``-th step and the last."""

    def progress(done: int, total: int) -> None:
        if done % every == 0 or done == total:
            log.log(level, "%s %d/%d", what, done, total)

    return progress
