"""Engine jobs: what the main thread prepares (``Job``), what the engine did (``Outcome``), OOM.

A ``Job`` holds no MRML object, so it can run on the worker thread. A running job is cancelled by the
engine's own mechanism (its click progress callback raises ``ClickCancelled``; see ``ClickWorker``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import numpy as np

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.engine.progress import ClickCancelled  # the engine's own: Session.cancel raises it too

JobKind = Literal["click", "undo", "redo", "reset", "restore"]


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

