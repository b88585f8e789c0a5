"""``SegmentationSession``: click-to-segment on one volume node into one segmentation node.

Refinement: a segment holding voxels CTSAM3D did not write (drawn, imported, edited; found by its labelmap's
MTime, then by comparing voxels) starts the engine from them (``Session.set_target_mask``), so no click removes
voxels it did not ask to remove, and undo returns to them exactly. Prompt memory: engine target = segment ID;
the clicks stored with the segment are replayed on its first use in a session.

Threading: ``run`` touches only the engine (worker thread; the first job also copies the CT there, so
starting a session never blocks the GUI); ``prepare_*`` and ``commit`` / ``discard`` touch MRML (main thread).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.engine.progress import ProgressCallback
from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.mrml.editor import EditMask, SourceRepresentationError, editable, source_problem, use_labelmap_source
from CTSAM3DLib.mrml.geometry import (
    check_volume_node, crop, ensure_reference_geometry, ijk_to_ras_matrix, intersect, labelmap_geometry, local_to_world,
    union_boxes, volume_from_image, world_to_local)
from CTSAM3DLib.mrml.jobs import (
    ClickCancelled, DeviceOutOfMemory, Job, JobKind, Outcome, is_out_of_memory)
from CTSAM3DLib.mrml.segments import (
    OverwriteMode, checked_overwrite, labelmap_mtime, overwrite_ids, read_clicks, segment_mask, segment_values,
    show_segment, store_clicks, write_region)

_NO_CLICKS: tuple[np.ndarray, tuple[bool, ...]] = (np.zeros((0, 3)), ())


class SegmentationSession:
    """Click-to-segment on one volume node into one segmentation node; one engine target per segment.

    The CT volume node's voxels are copied once, by the first job (worker thread); a segmentation without a
    reference geometry is put on the volume's grid. ``overwrite``: "none" (default: other segments untouched),
    "visible" or "all"; ``edit_mask``: the Segment Editor's masking; ``before_write(segment_id)``: called on the
    main thread before each write (the Slicer module saves the Segment Editor's undo state there).

    A segment's voxels are the truth: when they changed outside CTSAM3D since its last write (or were never
    written by it), the next click starts the engine from them (``Session.set_target_mask``), so that no
    click removes voxels it did not ask to remove; CTSAM3D's undo then stops at that content, and the clicks made
    before it stay with the segment (stored and shown).

    Raises:
        ValueError: not a scalar volume or not a segmentation; ``SourceRepresentationError`` (a ValueError) when the
            segmentation has segments whose source representation is not a binary labelmap.
    """

    def __init__(self, volume_node: Any, segmentation_node: Any, predictor: Any, config: SessionConfig | None = None,
                 overwrite: OverwriteMode = "none") -> None:
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise ValueError("Select a segmentation node for the results.")
        check_volume_node(volume_node)
        problem = source_problem(segmentation_node)
        if problem and segmentation_node.GetSegmentation().GetNumberOfSegments():
            raise SourceRepresentationError(problem)
        if problem:
            use_labelmap_source(segmentation_node)  # no segments: nothing to convert
        self.volume_node, self.segmentation_node = volume_node, segmentation_node
        self._engine = Session(predictor, config or SessionConfig())
        self.overwrite = checked_overwrite(overwrite)
        self.edit_mask = EditMask()
        self.before_write: Callable[[str], None] | None = None
        self._image = volume_node.GetImageData()  # kept alive until the worker has copied it (``_load_volume``)
        self._volume_lock = threading.Lock()
        self._ijk_to_ras = ijk_to_ras_matrix(volume_node)
        self._shape_xyz = tuple(int(v) for v in self._image.GetDimensions())
        self._volume_mtime = self._image.GetMTime()
        self._replayed: set[str] = set()  # segments whose stored clicks are in the engine (set by ``run``)
        self._written: dict[str, int] = {}  # segment -> its labelmap's MTime right after our last write
        self._pending: dict[str, int] = {}  # segment -> jobs prepared but not yet committed or discarded
        self._earlier: dict[str, tuple[np.ndarray, tuple[bool, ...]]] = {}  # clicks before a restart from content
        self._trimmed: set[str] = set()  # segments whose writes took voxels from other segments
        ensure_reference_geometry(volume_node, segmentation_node)
        if segmentation_node.GetDisplayNode() is None:
            segmentation_node.CreateDefaultDisplayNodes()

    @property
    def engine(self) -> Session:
        """The engine, its CT loaded (here, if no job has loaded it yet: scripting and tests)."""
        self._load_volume()
        return self._engine

    def matches(self, volume_node: Any, segmentation_node: Any, predictor: Any) -> bool:
        """Whether this session still serves these nodes and this predictor (volume unchanged)."""
        return (volume_node is self.volume_node and segmentation_node is self.segmentation_node
                and predictor is self._engine.predictor
                and volume_node.GetImageData() is not None
                and volume_node.GetImageData().GetMTime() == self._volume_mtime
                and np.array_equal(ijk_to_ras_matrix(volume_node), self._ijk_to_ras))

    def configure(self, config: SessionConfig | None = None, overwrite: OverwriteMode | None = None,
                  edit_mask: EditMask | None = None) -> None:
        """Change the engine settings, the overwrite mode and the editor's masking for the next jobs."""
        if config is not None:
            self._engine.config = config
        if overwrite is not None:
            self.overwrite = checked_overwrite(overwrite)
        if edit_mask is not None:
            self.edit_mask = edit_mask

    # ---- main thread: MRML -> jobs ------------------------------------------------------
    def add_segment(self, name: str = "") -> str:
        """Add an empty segment (Slicer picks name and colour when ``name`` is empty); returns its ID."""
        self._check_source()
        return self.segmentation_node.GetSegmentation().AddEmptySegment("", name)

    def segment(self, segment_id: str) -> Any:
        """The ``vtkSegment``; raises ValueError if it is not in the segmentation."""
        segment = self.segmentation_node.GetSegmentation().GetSegment(segment_id) if segment_id else None
        if segment is None:
            raise ValueError(f"Segment '{segment_id}' is not in '{self.segmentation_node.GetName()}'.")
        return segment

    def prepare_click(self, point_world_ras: ArrayLike, is_positive: bool, segment_id: str) -> Job:
        """A click job from a world RAS point (x, y, z) mm, e.g. a markups control point."""
        x, y, z = (float(v) for v in world_to_local(self.volume_node, np.asarray(point_world_ras, dtype=np.float64))[0])
        return self._job("click", segment_id, (x, y, z), bool(is_positive))

    def prepare(self, kind: JobKind, segment_id: str) -> Job:
        """An "undo", "redo", "reset" or "restore" job for the segment."""
        if kind not in ("undo", "redo", "reset", "restore"):
            raise ValueError(f"Unknown job kind {kind!r}.")
        if kind == "undo" and segment_id in self._trimmed:
            raise ValueError(
                f"CTSAM3D's Undo cannot give back the voxels that segment '{self.segment(segment_id).GetName()}' took "
                "from other segments (overwrite 'visible' or 'all'): use the Segment Editor's Undo, which holds the "
                "state before every CTSAM3D result, or Reset the segment.")
        return self._job(kind, segment_id, None, True)

    def prepare_restore(self, segment_id: str) -> Job | None:
        """The job that replays the segment's stored clicks on first use, or None (already done, or
        nothing stored; then no job is left pending)."""
        job = self.prepare("restore", segment_id)
        if job.replay_labels:
            return job
        self.discard(job)
        return None

    def _job(self, kind: JobKind, segment_id: str, point_ras: tuple[float, float, float] | None,
             is_positive: bool) -> Job:
        """A job; every prepared job must end in ``commit`` or ``discard``."""
        self._check_source()
        stored = _NO_CLICKS if segment_id in self._replayed else read_clicks(self.segment(segment_id))
        job = Job(kind, segment_id, point_ras, is_positive, *stored, content=self._content_if_edited(segment_id))
        self._pending[segment_id] = self._pending.get(segment_id, 0) + 1
        return job

    def _content_if_edited(self, segment_id: str) -> np.ndarray | None:
        """The segment's voxels if they may differ from what CTSAM3D last wrote; None when they cannot.

        A job still queued for the segment writes first, so it is judged later (edits made while
        a click computes are kept only where that click does not write).
        """
        if self._pending.get(segment_id) or self._written.get(segment_id) == labelmap_mtime(
                self.segmentation_node, segment_id):
            return None
        return segment_mask(self.segmentation_node, segment_id, self.volume_node, self._shape_xyz[::-1])

    def _check_source(self) -> None:
        problem = source_problem(self.segmentation_node)
        if problem:
            raise SourceRepresentationError(problem)

    def discard(self, job: Job) -> None:
        """Forget a prepared job that will not be committed (it failed or was cancelled)."""
        count = self._pending.get(job.segment_id, 0) - 1
        if count > 0:
            self._pending[job.segment_id] = count
        else:
            self._pending.pop(job.segment_id, None)

    # ---- any thread: engine only --------------------------------------------------------
    def run(self, job: Job, progress: ProgressCallback | None = None) -> Outcome:
        """Execute the job on the engine (no MRML): safe on a worker thread, one job at a time.

        ``progress``: called with the click's `ClickProgress` (patch i of n, stage, CPP ring) as it runs.

        Raises ValueError (point outside the volume, first click negative), ClickCancelled or
        DeviceOutOfMemory; the engine is then as before the job.
        """
        try:
            self._load_volume()
            return self._run(job, progress)
        except (ClickCancelled, ValueError):
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            device = getattr(self._engine.predictor, "device", "device")
            raise DeviceOutOfMemory(
                f"The {device} ran out of memory during this click; the segment is unchanged and you can go on. "
                "Lower 'Most patches per click', close other programs using the GPU, or choose the CPU.") from exc

    def _load_volume(self) -> None:
        """Copy the CT into the engine on first use (the worker thread: the copy and its checks take seconds)."""
        with self._volume_lock:
            if not self._engine.is_volume_set:
                if self._image is None:
                    raise RuntimeError("This CTSAM3D session is closed: start a new one for the volume.")
                self._engine.set_volume(volume_from_image(self._image, self._ijk_to_ras))
                self._image = None

    def _run(self, job: Job, progress: ProgressCallback | None = None) -> Outcome:
        t0, eng, tid = time.perf_counter(), self._engine, job.segment_id
        boxes, patches, cpp = [self._replay(job, progress)], 0, 0
        changed, seeded, before = True, False, None
        if job.content is not None and not np.array_equal(job.content, eng.mask(tid)):
            if job.kind in ("click", "restore"):
                self._earlier[tid] = self._clicks_ras(tid)  # restarting from the content keeps the clicks so far
                boxes.append(eng.set_target_mask(job.content, tid))
                seeded = True
            else:
                before = np.array(eng.mask(tid), copy=True)  # write only what the engine changes
        if job.kind == "click" and job.point_ras is not None:
            boxes.append(eng.add_click(job.point_ras, job.is_positive, frame="ras", target=tid, progress=progress))
            patches, cpp = int(eng.last_stats.get("patches", 0)), int(eng.last_stats.get("cpp_patches", 0))
        elif job.kind in ("undo", "redo"):
            changed = eng.undo(tid) if job.kind == "undo" else eng.redo(tid)
            boxes.append(eng.last_change if changed else None)
        elif job.kind == "reset":
            eng.reset(tid)
            self._earlier.pop(tid, None)
            boxes.append(eng.last_change)
        box = intersect(union_boxes(boxes), (0, 0, 0), self._shape_xyz)
        region = None if box is None else np.array(crop(eng.mask(tid), box), dtype=np.uint8, copy=True)
        only = None if before is None or region is None else crop(before, box) != region
        ras, labels = self._clicks_ras(tid)
        return Outcome(job, changed, box, region, ras, labels, time.perf_counter() - t0, patches, cpp, only, seeded)

    def _clicks_ras(self, segment_id: str) -> tuple[np.ndarray, tuple[bool, ...]]:
        """The segment's clicks in volume-local RAS: those before its last restart from content, then the engine's."""
        earlier_ras, earlier_labels = self._earlier.get(segment_id, _NO_CLICKS)
        clicks = self._engine.clicks(segment_id) if self._engine.is_volume_set else ()
        ijk = np.array([c.point_xyz for c in clicks], dtype=np.float64).reshape(-1, 3)
        ras = ijk @ self._ijk_to_ras[:3, :3].T + self._ijk_to_ras[:3, 3]
        return np.vstack([earlier_ras, ras]), earlier_labels + tuple(c.is_positive for c in clicks)

    def _replay(self, job: Job, progress: ProgressCallback | None = None) -> BBox3D | None:
        """Replay the stored clicks once per session, into a target without clicks; a failed or cancelled
        replay leaves no state, so the next job replays again (the stored clicks are never lost)."""
        tid = job.segment_id
        if tid in self._replayed:
            return None
        boxes = []
        if job.replay_labels and not self._engine.clicks(tid):
            try:
                for point, label in zip(job.replay_ras, job.replay_labels):
                    boxes.append(self._engine.add_click(point, label, frame="ras", target=tid, progress=progress))
            except BaseException:
                self._engine.remove_target(tid)
                raise
        self._replayed.add(tid)
        return union_boxes(boxes)

    # ---- main thread: outcome -> MRML ---------------------------------------------------
    def commit(self, outcome: Outcome) -> Outcome:
        """Write the outcome: the changed box into the segment (shown in the views) where the editor's masking
        allows, the clicks into its tag; ``before_write`` first when voxels change."""
        job = outcome.job
        sid = job.segment_id
        try:
            segment = self.segment(sid)
            if self.before_write is not None and outcome.box is not None:
                self.before_write(sid)
            is_complete, untouched = True, self._untouched_layer_mates(sid)
            if outcome.box is not None and outcome.region is not None:
                is_complete = self._write(outcome)
            store_clicks(segment, outcome.clicks_ras, outcome.labels, self._engine.config)
            if job.kind == "click":
                show_segment(self.segmentation_node, sid)
            for mate in untouched:  # same voxels, but their shared labelmap changed
                self._written[mate] = labelmap_mtime(self.segmentation_node, mate)
            if is_complete:
                self._written[sid] = labelmap_mtime(self.segmentation_node, sid)
            else:  # masked voxels differ from the engine's mask: the next job compares the content
                self._written.pop(sid, None)
        finally:
            self.discard(job)
        return outcome

    def _untouched_layer_mates(self, segment_id: str) -> list[str]:
        """Segments sharing the segment's labelmap layer, unchanged since CTSAM3D's last write, that a write into
        it leaves as they are (not overwritten): their record is renewed after it, so they are not re-read."""
        segmentation = self.segmentation_node.GetSegmentation()
        trimmed = set(overwrite_ids(self.segmentation_node, segment_id, self.overwrite))
        mates = segmentation.GetSegmentIDsForLayer(segmentation.GetLayerIndex(segment_id))
        return [s for s in mates if s != segment_id and s not in trimmed
                and self._written.get(s) == labelmap_mtime(self.segmentation_node, s)]

    def _write(self, outcome: Outcome) -> bool:
        """Write the outcome's box; False when the editor's masking kept some voxels from being written."""
        sid, box, only = outcome.job.segment_id, outcome.box, outcome.only
        assert box is not None and outcome.region is not None
        geometry = labelmap_geometry(self.volume_node, self.segmentation_node)
        allowed = editable(self.segmentation_node, sid, geometry, box, self.edit_mask, self.volume_node)
        if allowed is not None:
            only = allowed if only is None else only & allowed
        current = None
        if only is not None:
            content = outcome.job.content
            current = crop(content, box) if content is not None else segment_values(
                self.segmentation_node, sid, self.volume_node, box)
        took = write_region(self.segmentation_node, sid, geometry, box, outcome.region,
                            overwrite_ids(self.segmentation_node, sid, self.overwrite), self._shape_xyz, only, current)
        if took:
            self._trimmed.add(sid)
        return allowed is None or bool(allowed.all())

    def do(self, job: Job) -> Outcome:
        """Run and commit a job here and now (scripting, tests)."""
        try:
            outcome = self.run(job)
        except BaseException:
            self.discard(job)
            raise
        return self.commit(outcome)

    # ---- synchronous API for the Python console ----------------------------------------
    def click(self, point_ras: ArrayLike, is_positive: bool = True, segment_id: str | None = None) -> Outcome:
        """Add a click at world RAS ``point_ras`` (x, y, z) mm to the segment (a new one if None)."""
        segment_id = segment_id or self.add_segment()
        return self.do(self.prepare_click(point_ras, is_positive, segment_id))

    def undo(self, segment_id: str) -> bool:
        """Undo the segment's last click or reset; False if there was nothing to undo."""
        return self.do(self.prepare("undo", segment_id)).changed

    def redo(self, segment_id: str) -> bool:
        """Redo the segment's last undone change; False if there was nothing to redo."""
        return self.do(self.prepare("redo", segment_id)).changed

    def reset(self, segment_id: str) -> None:
        """Remove all clicks of the segment and clear what they segmented (undoable)."""
        self.do(self.prepare("reset", segment_id))

    def restore(self, segment_id: str) -> int:
        """Replay the clicks stored with the segment (once per session); returns how many were replayed."""
        job = self.prepare_restore(segment_id)
        return len(self.do(job).job.replay_labels) if job is not None else 0

    def clicks_world(self, segment_id: str) -> tuple[np.ndarray, tuple[bool, ...]]:
        """The segment's clicks in world RAS (N, 3) and their polarities: the stored ones until its first job in
        this session replays them (showing a segment's clicks never runs the model)."""
        if segment_id in self._replayed:
            ras, labels = self._clicks_ras(segment_id)
        else:
            ras, labels = read_clicks(self.segment(segment_id))
        return self.to_world(ras), labels

    def to_world(self, points_ras: np.ndarray) -> np.ndarray:  # volume-local RAS (N, 3) -> world RAS
        return local_to_world(self.volume_node, points_ras) if len(points_ras) else np.zeros((0, 3))

    def forget(self, segment_id: str) -> None:
        """Drop the engine state of a segment (deleted, or to be read afresh from its voxels and stored clicks)."""
        if self._engine.is_volume_set:
            self._engine.remove_target(segment_id)
        for state in (self._replayed, self._trimmed):
            state.discard(segment_id)
        for mapping in (self._earlier, self._written):
            mapping.pop(segment_id, None)

    def delete_segment(self, segment_id: str) -> None:
        """Remove the segment, its clicks and its engine state (RuntimeError while a job for it is pending)."""
        if self._pending.get(segment_id):
            raise RuntimeError("CTSAM3D is still computing a click of this segment: wait for it, or press Cancel.")
        self.forget(segment_id)
        self.segmentation_node.GetSegmentation().RemoveSegment(segment_id)

    def close(self) -> None:
        """Free the engine (volume copy, masks, cached features)."""
        self._engine.close()
        self._image = None
