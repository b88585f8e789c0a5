"""``BridgeLogic``: the Qt-free core of ``CTSAM3DLogic`` and of the web app (model, session, worker, scripting API)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from CTSAM3DLib.engine.session import SessionConfig
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.mrml.editor import EditMask, use_labelmap_source
from CTSAM3DLib.mrml.segments import OverwriteMode, checked_overwrite
from CTSAM3DLib.mrml.session import SegmentationSession
from CTSAM3DLib.mrml.worker import ClickWorker


class BridgeLogic:
    """Qt-free core of ``CTSAM3DLogic``: the model, one active session, the worker, the scripting API.

    Console example: ``segment_id = logic.segment(volume, segmentation, None, [[12.0, -40.5, 88.0]], [1])``,
    then ``logic.session(volume, segmentation).click([15.0, -38.0, 90.0], False, segment_id)`` (see docs/slicer.md).
    """

    def __init__(self) -> None:
        self.predictor: Predictor | None = None
        self.config = SessionConfig()
        self.overwrite: OverwriteMode = "none"
        self.edit_mask = EditMask()
        self.before_write: Callable[[str], None] | None = None  # main thread, before each write (editor undo)
        self._predictor_key: tuple | None = None
        self._session: SegmentationSession | None = None
        self._worker: ClickWorker | None = None

    @staticmethod
    def available_devices() -> list[str]:
        """``["cuda", "cpu"]`` when PyTorch sees a GPU, else ``["cpu"]``."""
        import torch
        return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]

    def load_model(self, path: str | Path | None = None, device: str | None = None,
                   window_hu: tuple[float, float] | None = None) -> Predictor:
        """Load (once) the bundled default weights (``path`` None, SHA-256 checked) or a checkpoint, e.g. the
        authors' ``params.pth`` with its HU ``window_hu`` (min, max); ``device`` None = first of ``available_devices``.
        """
        device = device or self.available_devices()[0]
        key = (str(path) if path else None, device, tuple(window_hu) if window_hu else None)
        if self.predictor is None or key != self._predictor_key:
            from CTSAM3DLib.api import load_model

            self.set_predictor(load_model(path, device=device, window_hu=window_hu))
            self._predictor_key = key
        return self.predictor  # type: ignore[return-value]

    def set_predictor(self, predictor: Any) -> None:
        """Use this ``Predictor`` from now on (closes the active session; RuntimeError while a job runs)."""
        self._check_idle()
        self.predictor = predictor
        self._predictor_key = None
        self.close_session()

    def session(self, volume_node: Any, segmentation_node: Any) -> SegmentationSession:
        """The session for these nodes: the active one, or a new one (loading the default model if none is loaded)."""
        if self.predictor is None:
            self.load_model()
        current = self._session
        if current is None or not current.matches(volume_node, segmentation_node, self.predictor):
            self.close_session()  # RuntimeError while a job runs on the active session
            current = self._session = SegmentationSession(volume_node, segmentation_node, self.predictor,
                                                          self.config, self.overwrite)
        current.configure(self.config, self.overwrite, self.edit_mask)
        current.before_write = self.before_write
        return current

    def use_labelmap_source(self, segmentation_node: Any) -> None:
        """Convert a segmentation stored as closed surfaces or contours to a binary-labelmap source (as the Segment
        Editor does before editing), so that CTSAM3D can write into it; RuntimeError if Slicer cannot."""
        use_labelmap_source(segmentation_node)

    def configure(self, use_cpp: bool | None = None, max_patches: int | None = None,
                  overwrite: OverwriteMode | None = None, cpp_reach_depth: float | None = None,
                  edit_mask: EditMask | None = None) -> None:
        """Change CPP on/off, its most patches per click, the overwrite mode, CPP's reach depth (``math.inf``:
        off; `LARGE_ORGAN_REACH_DEPTH` for large organs, see ``SessionConfig``) and the Segment Editor's masking
        (``editor.editor_settings``); applies to the active session.
        """
        if max_patches is not None and int(max_patches) < 1:
            raise ValueError("max_patches must be at least 1.")
        changes: dict[str, Any] = {"use_cpp": use_cpp, "max_patches": max_patches,
                                   "cpp_reach_depth": None if cpp_reach_depth is None else float(cpp_reach_depth)}
        self.config = dataclasses.replace(self.config, **{k: v for k, v in changes.items() if v is not None})
        self.overwrite = checked_overwrite(overwrite or self.overwrite)
        self.edit_mask = edit_mask or self.edit_mask
        if self._session is not None:
            self._session.configure(self.config, self.overwrite, self.edit_mask)

    def segment(self, volume_node: Any, segmentation_node: Any, segment_id: str | None,
                points_ras: Sequence[Sequence[float]], labels: Sequence[int | bool]) -> str:
        """Segment from clicks in one call; returns the segment ID (a new segment when ``segment_id`` is None).

        ``points_ras``: (N, 3) world RAS points (x, y, z) mm in click order; ``labels``: N labels, 1 (True)
        positive, 0 negative. Continuing a segment adds to its clicks.
        """
        points = np.asarray(points_ras, dtype=np.float64).reshape(-1, 3)
        if len(points) != len(labels) or not len(points):
            raise ValueError(f"Give one label per point, and points: {len(points)} points, {len(labels)} labels.")
        current = self.session(volume_node, segmentation_node)
        segment_id = segment_id or current.add_segment()
        for point, label in zip(points, labels):
            current.click(point, bool(label), segment_id)
        return segment_id

    @property
    def worker(self) -> ClickWorker:
        """The persistent worker thread (created on first use)."""
        if self._worker is None:
            self._worker = ClickWorker()
        return self._worker

    def cancel(self) -> None:
        """Cancel the running and the queued worker jobs."""
        self.worker.cancel()

    def _check_idle(self) -> None:
        if self._worker is not None and self._worker.busy:
            raise RuntimeError("CTSAM3D is still computing a click: wait for it, or press Cancel, before changing "
                               "the volume, the segmentation, the device or the checkpoint.")

    def close_session(self) -> None:
        """Close the active session (its clicks stay stored in the segments); RuntimeError while a job runs."""
        self._check_idle()
        if self._session is not None:
            self._session.close()
            self._session = None

    def close(self) -> None:
        """Stop the worker and close the session."""
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        self.close_session()
