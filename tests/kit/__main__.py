"""``python -m kit MODELS_ROOT`` (run in ``tests/``): write every family's tiny models into the ComfyUI-style models
tree ``MODELS_ROOT`` and print the families written, one per line."""

from __future__ import annotations

import sys
from pathlib import Path

from . import build_models_tree


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        sys.stderr.write("usage: python -m kit MODELS_ROOT\n")
        return 2
    sys.stdout.write("".join(f"{fam}\n" for fam in build_models_tree(Path(argv[0]))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
