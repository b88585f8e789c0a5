"""Progress and cancellation of one click (``Session.add_click(progress=...)``, ``Session.cancel()``).

A click with CPP on can run tens of patches through the network, ring by ring; front ends show
which patch of how many is running and let the user stop it. Nothing of a click is committed
before its last ring, so a cancelled click leaves its target exactly as it was.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

# What a click is doing: its own patch (and the patches that disagree with it), spreading a
# correction into further patches, or CPP expansion into neighbouring patches.
Stage = Literal["click", "spread", "cpp"]


class ClickCancelled(RuntimeError):
    """The click was cancelled (``Session.cancel``); the target and its undo history are as before it."""


@dataclass(frozen=True)
class ClickProgress:
    """Where a running click is.

    Attributes:
        stage: ``"click"``, ``"spread"`` or ``"cpp"`` (see `Stage`).
        ring: 0 for the clicked patch(es), then 1, 2, ... for each ring of spreading or CPP.
        done: patches the network has finished so far in this click.
        total: patches planned so far; grows as CPP and spreading reach further rings, up to the
            patches the click runs (candidates CPP then drops included, so it can pass ``max_patches``).
    """

    stage: Stage
    ring: int
    done: int
    total: int

    def describe(self) -> str:
        """One status line for a GUI: ``"patch 5 of 25 (CPP ring 1)"``."""
        where = {"click": "clicked patch", "spread": "correction", "cpp": "CPP"}[self.stage]
        ring = f" ring {self.ring}" if self.ring else ""
        return f"patch {min(self.done + 1, self.total)} of {self.total} ({where}{ring})"


ProgressCallback = Callable[[ClickProgress], None]


class ClickMonitor:
    """Counts one click's patches, reports them to a callback and stops the click once cancelled.

    Args:
        callback: called with a `ClickProgress` when a ring is planned and after each network batch.
        cancel: set (from any thread) to stop the click at its next batch.
    """

    def __init__(self, callback: ProgressCallback | None, cancel: threading.Event) -> None:
        self.callback = callback
        self.cancel = cancel
        self.stage: Stage = "click"
        self.ring = 0
        self.done = 0
        self.total = 0

    def plan(self, n_patches: int, stage: Stage, ring: int) -> None:
        """A ring of ``n_patches`` is about to run (raises `ClickCancelled` when cancelled)."""
        self.check()
        self.stage, self.ring = stage, ring
        self.total += n_patches
        self._report()

    def finished(self, n_patches: int) -> None:
        """A network batch of ``n_patches`` finished (raises `ClickCancelled` when cancelled)."""
        self.done += n_patches
        self._report()
        self.check()

    def check(self) -> None:
        """Raise `ClickCancelled` when the click was cancelled."""
        if self.cancel.is_set():
            raise ClickCancelled(f"Click cancelled after {self.done} of {self.total} patches; nothing was changed.")

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(ClickProgress(self.stage, self.ring, self.done, self.total))
