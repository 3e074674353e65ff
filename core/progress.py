"""Progress reporting for long core loops, independent of any UI.

A progress callback is a plain callable ``progress(done, total)``. Front ends (the ComfyUI nodes, the CLI)
pass their own; it may raise to interrupt the loop (ComfyUI raises ``InterruptProcessingException``).
"""

from __future__ import annotations

from collections.abc import Callable

Progress = Callable[[int, int], None]


def noop(done: int, total: int) -> None:
    """A progress callback that does nothing."""


class Counter:
    """Wraps a callback with a running count, so nested loops can report one overall progress."""

    def __init__(self, total: int, progress: Progress | None = None) -> None:
        self.total = max(int(total), 1)
        self.done = 0
        self._progress = progress or noop

    def step(self, n: int = 1) -> None:
        self.done = min(self.done + n, self.total)
        self._progress(self.done, self.total)
