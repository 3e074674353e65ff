"""SSEN reference-based ×4 super-resolution (Shim, Park, Kweon, CVPR 2020), rebuilt from the paper.

``load_ssen(path_or_state_dict=None)`` returns an eval-mode :class:`SSENet` (None → the shipped small model);
``model(lr, ref=None)`` maps ``[B,3,h,w]`` in [0,1] to ``[B,3,4h,4w]``.
"""

from __future__ import annotations

from .arch import ARCH
from .loader import SHIPPED_WEIGHTS, build_from_state_dict, load_ssen, save_ssen, shipped_weights
from .model import SSENConfig, SSENet, infer_config

__all__ = ["ARCH", "SHIPPED_WEIGHTS", "SSENConfig", "SSENet", "build_from_state_dict", "infer_config", "load_ssen",
           "save_ssen", "shipped_weights"]
