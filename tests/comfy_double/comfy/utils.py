"""Test double of ``comfy.utils``: ProgressBar with a global hook (updates are recorded)."""

from __future__ import annotations

PROGRESS_BAR_ENABLED = True
PROGRESS_BAR_HOOK = None
updates: list[tuple[int, int]] = []  # (value, total) of every update, for assertions


def set_progress_bar_enabled(enabled):
    global PROGRESS_BAR_ENABLED
    PROGRESS_BAR_ENABLED = enabled


def set_progress_bar_global_hook(function):
    global PROGRESS_BAR_HOOK
    PROGRESS_BAR_HOOK = function


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.hook = PROGRESS_BAR_HOOK
        self.node_id = node_id

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        if value > self.total:
            value = self.total
        self.current = value
        updates.append((self.current, self.total))
        if self.hook is not None:
            self.hook(self.current, self.total, preview, node_id=self.node_id)

    def update(self, value):
        self.update_absolute(self.current + value)


def common_upscale(samples, width, height, upscale_method, crop):
    """Resize ``[B,C,H,W]`` to ``height × width`` (``center``: first crop to the target aspect ratio, centred)."""
    import torch.nn.functional as F

    s = samples
    if crop == "center":
        h, w = samples.shape[-2:]
        old, new = w / h, width / height
        x = round((w - w * (new / old)) / 2) if old > new else 0
        y = round((h - h * (old / new)) / 2) if old < new else 0
        s = samples.narrow(-2, y, h - 2 * y).narrow(-1, x, w - 2 * x)
    if upscale_method in ("bislerp", "lanczos"):
        raise NotImplementedError(f"the test double has no {upscale_method} resize")
    return F.interpolate(s, size=(height, width), mode=upscale_method)
