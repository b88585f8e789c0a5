"""Engine jobs: what the main thread prepares (``Job``), what the engine did (``Outcome``), cancellation, OOM.

A ``Job`` holds no MRML object, so it can run on the worker thread; ``CancellablePredictor`` lets a
worker job be cancelled between network calls (``cancellable`` marks the thread's running job).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.engine.progress import ClickCancelled  # the engine's own: Session.cancel raises it too

JobKind = Literal["click", "undo", "redo", "reset", "restore"]

_cancel_state = threading.local()  # .event: the running worker job's cancel flag


@contextmanager
def cancellable(event: threading.Event) -> Iterator[None]:
    """Within this block, ``CancellablePredictor`` calls on this thread raise ``ClickCancelled`` once ``event``
    is set."""
    _cancel_state.event = event
    try:
        yield
    finally:
        _cancel_state.event = None


@dataclass(frozen=True)
class Job:
    """One engine operation on one segment (= engine target), prepared on the main thread; holds no MRML object.

    ``point_ras``: the click (x, y, z) in the volume's local RAS mm ("click" only). ``replay_ras`` (N, 3) and
    ``replay_labels``: clicks stored with the segment, replayed first on its first use in the session.
    ``content``: the segment's voxels (uint8, z, y, x, on the volume grid) when they may have changed outside
    CTSAM3D since its last write (drawn, imported, Segment Editor effects); None when they did not.
    """

    kind: JobKind
    segment_id: str
    point_ras: tuple[float, float, float] | None = None
    is_positive: bool = True
    replay_ras: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))
    replay_labels: tuple[bool, ...] = ()
    content: np.ndarray | None = None


@dataclass(frozen=True)
class Outcome:
    """What a job did, ready to be committed to MRML.

    ``changed``: False when undo/redo had nothing to do. ``box``: changed input-grid box ``((i0, j0, k0),
    (i1, j1, k1))`` exclusive, or None; ``region``: a copy of the uint8 mask (z, y, x) inside it; ``only``:
    None (write the whole box) or the box voxels to write (bool): undo / redo / reset of a segment edited
    outside CTSAM3D change just the voxels the engine changed, so the outside edits stay.
    ``seeded``: the engine restarted the segment from its content (edited outside CTSAM3D) before the job.
    ``clicks_ras`` (N, 3) volume-local RAS and ``labels``: the segment's clicks after the job.
    ``seconds``: engine time; ``patches`` computed, ``cpp_patches`` of them added by CPP (the others: the
    clicked patch and the patches a correction spread into).
    """

    job: Job
    changed: bool
    box: BBox3D | None
    region: np.ndarray | None
    clicks_ras: np.ndarray
    labels: tuple[bool, ...]
    seconds: float = 0.0
    patches: int = 0
    cpp_patches: int = 0
    only: np.ndarray | None = None
    seeded: bool = False

    def describe(self, device: object) -> str:
        """The status line a front end shows after the job (device, time, patches, clicks)."""
        return (f"{device} | {self.seconds * 1000:.0f} ms | {self.patches} patches ({self.cpp_patches} by CPP) | "
                f"{len(self.labels)} clicks")


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory during a job; the segment and the session are as before it."""


def is_out_of_memory(error: BaseException) -> bool:
    """Whether the error is the device running out of memory (CUDA or otherwise)."""
    import torch
    return isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower()


class CancellablePredictor:
    """Wraps a ``Predictor`` so that a worker job can be cancelled between network calls.

    Cancelling raises ``ClickCancelled`` inside the engine before its next encode / decode /
    CPP call; the engine commits a click only at its end, so its state stays as before.
    """

    def __init__(self, predictor: Any) -> None:
        self.predictor = predictor

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.predictor, name)
        if name not in ("encode", "decode", "cpp"):
            return attribute

        def checked(*args: Any, **kwargs: Any) -> Any:
            event = getattr(_cancel_state, "event", None)
            if event is not None and event.is_set():
                raise ClickCancelled("Cancelled.")
            return attribute(*args, **kwargs)

        return checked
