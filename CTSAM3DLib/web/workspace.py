"""One browser tab's work: its CT, its segmentation and segments, clicks through the MRML bridge, downloads.

Trame-free (tested on ``slicer-core`` without a browser). Every engine call goes through
``CTSAM3DLib.mrml`` exactly as in the Slicer module: ``BridgeLogic.session`` for the nodes,
``PromptMarkups`` for include / exclude points placed in a view, ``ClickWorker`` for the engine jobs, whose
results ``poll`` commits to the scene on the caller's (the web server's) thread.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from CTSAM3DLib.mrml.logic import BridgeLogic
from CTSAM3DLib.mrml.markups import PromptMarkups
from CTSAM3DLib.mrml.session import SegmentationSession
from CTSAM3DLib.mrml.worker import JobResult
from CTSAM3DLib.web import inputs

# CT window presets: name -> (window, level) in HU.
WINDOW_PRESETS: dict[str, tuple[float, float]] = {
    "Abdomen": (350.0, 40.0), "Liver": (150.0, 60.0), "Lung": (1500.0, -600.0), "Bone": (2000.0, 300.0),
    "Brain": (80.0, 40.0), "Mediastinum": (400.0, 40.0),
}
# Download formats: suffix -> MIME type.
DOWNLOAD_TYPES = {".seg.nrrd": "application/octet-stream", ".nii.gz": "application/gzip"}


@dataclass(frozen=True)
class SegmentInfo:
    """A row of the segment list."""

    segment_id: str
    name: str
    color: str  # "#rrggbb"
    is_visible: bool


class Workspace:
    """The CT, its segmentation node and the selected segment of one tab, on that tab's own MRML scene."""

    def __init__(self, scene: Any, app_logic: Any, logic: BridgeLogic, access: inputs.DataAccess | None = None) -> None:
        self.scene, self.app_logic, self.logic = scene, app_logic, logic
        # What ``open`` may read (the web app's tab rules); without one, any readable path (library use).
        self.access = access or inputs.DataAccess.create(tempfile.gettempdir(), unrestricted=True)
        self.volume_node: Any = None
        self.segmentation_node: Any = None
        self.segment_id = ""
        self.is_positive = True
        self.on_error: Callable[[BaseException], None] = lambda error: None  # a placed point could not be used
        self.prompts = PromptMarkups(scene, self._on_point)

    # ---- CT -------------------------------------------------------------------------------
    def open(self, path: str | Path) -> Any:
        """Load a CT (file, DICOM folder or zipped DICOM folder) with Slicer's reader and start a new segmentation.

        The path must be one ``access`` allows. A single file is decoded once, by Slicer's reader; the
        library's payload checks (a truncated or damaged file, which that reader accepts) scan it first.
        The previous CT and its segmentation leave the scene only once the new CT has loaded.
        Raises ValueError (not allowed, unreadable, not a 3-D scalar CT, a click still running).
        """
        self._refuse_if_busy("open another CT")
        from trame_slicer.core.volumes_reader import VolumesReader

        with self.access.volume_files(path) as files:
            if len(files) == 1:
                inputs.check_image_file(files[0])
            nodes = VolumesReader.load_volumes(self.scene, self.app_logic, files)
        if not nodes:
            raise ValueError(f"Slicer could not read a volume from {Path(path).name}.")
        volume_node = nodes[0]
        for extra in nodes[1:]:
            self.scene.RemoveNode(extra)
        try:
            _check_ct(volume_node)
        except ValueError:
            self.scene.RemoveNode(volume_node)
            raise
        self.close_ct()
        self.volume_node = volume_node
        self.segmentation_node = self.scene.AddNewNodeByClass("vtkMRMLSegmentationNode",
                                                              f"{volume_node.GetName()} segmentation")
        self.segmentation_node.CreateDefaultDisplayNodes()
        self.segmentation_node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
        self.set_window("Abdomen")
        return volume_node

    def close_ct(self) -> None:
        """Remove the CT, its segmentation and its prompts from the scene, and free the engine session."""
        self._refuse_if_busy("close the CT")
        self.logic.close_session()
        self.prompts.show(np.zeros((0, 3)), ())
        for node in (self.segmentation_node, self.volume_node):
            if node is not None and node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.volume_node = self.segmentation_node = None
        self.segment_id = ""

    def set_window(self, preset: str) -> None:
        """Apply a CT window preset (a name of ``WINDOW_PRESETS``) to the CT's display."""
        window, level = WINDOW_PRESETS[preset]
        display = self.volume_node.GetDisplayNode() if self.volume_node is not None else None
        if display is not None:
            display.SetAutoWindowLevel(0)
            display.SetWindowLevel(window, level)

    def session(self) -> SegmentationSession:
        """The bridge session on the CT and its segmentation (ValueError before a CT is open)."""
        if self.volume_node is None:
            raise ValueError("Open a CT first.")
        return self.logic.session(self.volume_node, self.segmentation_node)

    # ---- segments -------------------------------------------------------------------------
    def segments(self) -> list[SegmentInfo]:
        """The segment list in the segmentation's order."""
        if self.segmentation_node is None:
            return []
        segmentation, display = self.segmentation_node.GetSegmentation(), self.segmentation_node.GetDisplayNode()
        rows = []
        for sid in segmentation.GetSegmentIDs():
            segment = segmentation.GetSegment(sid)
            color = "#" + "".join(f"{round(255 * c):02x}" for c in segment.GetColor())
            rows.append(SegmentInfo(sid, segment.GetName(), color, bool(display.GetSegmentVisibility(sid))))
        return rows

    def add_segment(self, name: str = "") -> str:
        """Add an empty segment (Slicer picks the name and colour when ``name`` is empty) and select it."""
        segment_id = self.session().add_segment(name)
        self.select(segment_id)
        return segment_id

    def select(self, segment_id: str) -> None:
        """Make ``segment_id`` the clicked segment; its stored clicks are replayed on first use."""
        session = self.session()
        session.segment(segment_id)
        self.segment_id = segment_id
        job = session.prepare_restore(segment_id)
        if job is not None:
            self.logic.worker.submit(session, job)
        else:
            self.prompts.show(*session.clicks_world(segment_id))

    def rename(self, segment_id: str, name: str) -> None:
        """Rename a segment (ValueError for an empty name)."""
        if not name.strip():
            raise ValueError("A segment name cannot be empty.")
        self.session().segment(segment_id).SetName(name.strip())

    def set_color(self, segment_id: str, color: str) -> None:
        """Set a segment's colour from ``"#rrggbb"``."""
        text = color.strip().lstrip("#")[:6]
        try:
            rgb = [int(text[i:i + 2], 16) / 255.0 for i in (0, 2, 4)]
        except ValueError:
            raise ValueError(f"{color!r} is not a colour of the form #rrggbb.") from None
        self.session().segment(segment_id).SetColor(*rgb)

    def set_visible(self, segment_id: str, is_visible: bool) -> None:
        """Show or hide a segment in all views."""
        self.session().segment(segment_id)
        self.segmentation_node.GetDisplayNode().SetSegmentVisibility(segment_id, bool(is_visible))

    def delete(self, segment_id: str) -> None:
        """Delete a segment and its engine state (not undoable: the segment and its clicks are gone)."""
        self._refuse_if_busy("delete a segment")
        session = self.session()
        session.segment(segment_id)
        session.engine.remove_target(segment_id)
        self.segmentation_node.GetSegmentation().RemoveSegment(segment_id)
        if segment_id == self.segment_id:  # the last remaining segment is selected next
            self.segment_id = ""
            self.prompts.show(np.zeros((0, 3)), ())
            remaining = self.segments()
            if remaining:
                self.select(remaining[-1].segment_id)

    # ---- clicks and jobs -------------------------------------------------------------------
    def click(self, point_world_ras: Any, is_positive: bool) -> None:
        """Queue a click at world RAS (x, y, z) mm on the selected segment (a new segment if none)."""
        session = self.session()
        if not self.segment_id:
            self.add_segment()
        self.logic.worker.submit(session, session.prepare_click(point_world_ras, is_positive, self.segment_id))

    def submit(self, kind: str) -> None:
        """Queue "undo", "redo" or "reset" for the selected segment."""
        if not self.segment_id:
            raise ValueError("Select a segment first.")
        session = self.session()
        self.logic.worker.submit(session, session.prepare(kind, self.segment_id))  # type: ignore[arg-type]

    def poll(self) -> list[JobResult]:
        """Commit finished jobs to the scene and redraw the selected segment's points; returns them."""
        results = self.logic.worker.poll()
        for result in results:
            if result.job.segment_id == self.segment_id and result.session.segmentation_node is self.segmentation_node:
                self.prompts.show(*result.clicks_world())
        return results

    @property
    def is_busy(self) -> bool:
        """A job is queued, running or not yet committed."""
        return self.logic.worker.busy

    def _on_point(self, point_world: np.ndarray, is_positive: bool) -> None:
        try:
            self.click(point_world, is_positive)
        except Exception as exc:  # shown in the page's error banner; the segments stay as they were
            self.on_error(exc)

    def _refuse_if_busy(self, action: str) -> None:
        if self.is_busy:
            raise ValueError(f"A click is still running: wait for it or cancel it, then {action}.")

    # ---- downloads -------------------------------------------------------------------------
    def export(self, suffix: str) -> bytes:
        """The segmentation as ``.seg.nrrd`` (segments with names, colours and stored clicks) or ``.nii.gz``
        (label map on the CT's grid, label n = n-th segment); ValueError before a CT is open."""
        if self.segmentation_node is None:
            raise ValueError("Open a CT and segment something first.")
        if suffix not in DOWNLOAD_TYPES:
            raise ValueError(f"Unknown download format {suffix!r}: use one of {', '.join(DOWNLOAD_TYPES)}.")
        with tempfile.TemporaryDirectory(prefix="ctsam3d-export-") as folder:
            path = Path(folder) / f"segmentation{suffix}"
            node = self.segmentation_node if suffix == ".seg.nrrd" else self._labelmap_node()
            try:
                _write_node(node, path)
            finally:
                if node is not self.segmentation_node:
                    self.scene.RemoveNode(node)
            return path.read_bytes()

    def _labelmap_node(self) -> Any:
        import slicer
        import vtk

        labelmap = self.scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "CTSAM3D export")
        ids = vtk.vtkStringArray()
        for sid in self.segmentation_node.GetSegmentation().GetSegmentIDs():
            ids.InsertNextValue(sid)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(
                self.segmentation_node, ids, labelmap, self.volume_node):
            self.scene.RemoveNode(labelmap)
            raise ValueError("Slicer could not export the segments as a label map.")
        return labelmap


def _check_ct(volume_node: Any) -> None:
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"{volume_node.GetName()} is not a scalar CT volume.")
    image = volume_node.GetImageData()
    if image is None or image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"{volume_node.GetName()} has no voxels or several components per voxel; CTSAM3D needs a CT.")
    if min(image.GetDimensions()) < 2:
        raise ValueError(f"{volume_node.GetName()} is a 2-D image {image.GetDimensions()}; CTSAM3D needs a 3-D CT.")
    import vtk
    from vtk.util.numpy_support import vtk_to_numpy

    if image.GetScalarType() in (vtk.VTK_FLOAT, vtk.VTK_DOUBLE):  # Slicer's reader keeps NaN; the engine cannot
        if not np.isfinite(vtk_to_numpy(image.GetPointData().GetScalars())).all():
            raise ValueError(f"{volume_node.GetName()} has NaN or infinite voxels; CTSAM3D needs finite HU values.")


def _write_node(node: Any, path: Path) -> None:
    storage = node.CreateDefaultStorageNode()
    storage.SetFileName(str(path))
    if not storage.WriteData(node):
        raise ValueError(f"Slicer could not write {path.name}.")
