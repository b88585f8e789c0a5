"""Qt-free bridge between 3D Slicer's MRML scene and the CTSAM3D engine (the core of ``CTSAM3DLogic``).

* Voxels: ``slicer.util.arrayFromVolume`` (copied) with the node's own ``IJKToRAS`` ->
  ``Volume.from_ijk_to_ras``; no files, and never SimpleITK's geometry (Slicer reverses k for
  left-handed images, so array and matrix must both come from Slicer).
* Clicks: world RAS (markups, views; parent transforms applied) -> the volume's local RAS
  through its parent transform -> ``Session.add_click(frame="ras")``.
* Results: only the box the engine changed is written into the target segment, on the volume's
  voxel grid in the segmentation's frame. Other segments change only with ``overwrite``
  ("visible" or "all", as the Segment Editor's overwrite setting).
* Refinement: a segment holding voxels CTSAM3D did not write (drawn, imported, edited; found by its labelmap's
  MTime, then by comparing voxels) starts the engine from them (``Session.set_target_mask``), so no click removes
  voxels it did not ask to remove, and undo returns to them exactly.
* Prompt memory: engine target = segment ID; the clicks are stored in the segment tag
  ``CTSAM3D.Clicks`` (JSON, volume-local RAS + labels), saved with the segmentation
  (.seg.nrrd, .mrb) and replayed on the segment's first use in a session.

Threading: ``SegmentationSession.run`` touches only the engine (worker thread); ``prepare_*`` and
``commit`` / ``discard`` touch MRML (main thread); ``ClickWorker`` runs jobs in order and commits them from
``poll(wait_s)``, whose GIL-releasing wait is what lets the worker run under Slicer's GIL-holding event loop.
``slicer``/``vtk`` are imported lazily; the MRML calls used behave the same in Slicer and in ``slicer-core``.
Arrays are ``(z, y, x)``; points ``(x, y, z)`` = R, A, S in mm.
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.io.volume import Volume

# Segment tag holding the segment's clicks as JSON (saved with the segmentation), and its format version.
CLICKS_TAG, CLICKS_FORMAT_VERSION = "CTSAM3D.Clicks", 1
# Colours (RGB in 0..1) of the positive (include) and negative (exclude) prompt points.
POSITIVE_COLOR, NEGATIVE_COLOR = (0.15, 0.8, 0.2), (0.9, 0.15, 0.15)
OverwriteMode = Literal["none", "visible", "all"]
JobKind = Literal["click", "undo", "redo", "reset", "restore"]

_cancel_state = threading.local()  # .event: the running worker job's cancel flag


class ClickCancelled(RuntimeError):
    """The job was cancelled; the segment and the engine state are as before it."""


# ---- MRML <-> numpy -------------------------------------------------------------------
def _slicer() -> Any:
    import slicer  # lazy: Slicer's own Python or the slicer-core wheel
    return slicer


def ijk_to_ras_matrix(volume_node: Any) -> np.ndarray:
    """The volume node's own 4x4 IJK -> local RAS matrix (parent transforms not applied)."""
    import vtk
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return _slicer().util.arrayFromVTKMatrix(matrix)


def volume_from_node(volume_node: Any) -> Volume:
    """Copy a scalar volume node's voxels (z, y, x) and its IJKToRAS into a ``Volume`` (ValueError if not a CT)."""
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.GetImageData() is None:
        raise ValueError("Select a scalar CT volume that has voxels as the input volume.")
    if volume_node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"Volume '{volume_node.GetName()}' has several components per voxel; CTSAM3D needs a CT.")
    array = np.array(_slicer().util.arrayFromVolume(volume_node), copy=True)
    return Volume.from_ijk_to_ras(array, ijk_to_ras_matrix(volume_node))


def _transform_points(source_node: Any, target_node: Any, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) points from ``source_node``'s frame to ``target_node``'s (None = world); any transform."""
    import vtk
    transform = vtk.vtkGeneralTransform()
    _slicer().vtkMRMLTransformNode.GetTransformBetweenNodes(source_node, target_node, transform)
    pts = np.atleast_2d(np.asarray(points, dtype=np.float64))
    return np.array([transform.TransformPoint(p.tolist()) for p in pts]).reshape(pts.shape)


def world_to_local(node: Any, points_world: np.ndarray) -> np.ndarray:
    """World RAS (N, 3) -> the node's local RAS, through its parent transform (linear or not)."""
    return _transform_points(None, node.GetParentTransformNode(), points_world)


def local_to_world(node: Any, points_local: np.ndarray) -> np.ndarray:
    """The node's local RAS (N, 3) -> world RAS."""
    return _transform_points(node.GetParentTransformNode(), None, points_local)


def labelmap_geometry(volume_node: Any, segmentation_node: Any) -> np.ndarray:
    """4x4 volume voxel (i, j, k) -> segmentation-local RAS, transforms composed (ValueError if non-linear)."""
    import vtk
    between = vtk.vtkMatrix4x4()
    if not _slicer().vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            volume_node.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), between):
        raise ValueError("The volume and the segmentation are related by a non-linear transform: harden it, or place "
                         "the segmentation under the same transform as the volume.")
    return _slicer().util.arrayFromVTKMatrix(between) @ ijk_to_ras_matrix(volume_node)


def _oriented_image(geometry: np.ndarray, extent: Sequence[int]) -> Any:
    image = _slicer().vtkOrientedImageData()
    image.SetExtent(*[int(v) for v in extent])
    image.SetImageToWorldMatrix(_slicer().util.vtkMatrixFromArray(geometry))
    return image


def ensure_reference_geometry(volume_node: Any, segmentation_node: Any) -> bool:
    """Put a segmentation without segments (or geometry) on the volume's voxel grid; True if set. One with
    segments on another grid keeps it: writes are then resampled by Slicer instead of voxel-exact."""
    slicer = _slicer()
    segmentation = segmentation_node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if segmentation.GetNumberOfSegments() > 0 and segmentation.GetConversionParameter(name):
        return False
    extent = volume_node.GetImageData().GetExtent()
    image = _oriented_image(labelmap_geometry(volume_node, segmentation_node), extent)
    segmentation.SetConversionParameter(name, slicer.vtkSegmentationConverter.SerializeImageGeometry(image))
    role = segmentation_node.GetReferenceImageGeometryReferenceRole()
    segmentation_node.SetNodeReferenceID(role, volume_node.GetID())
    return True


def write_region(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D, region: np.ndarray,
                 overwrite_ids: Sequence[str] = (), grid_size_xyz: Sequence[int] | None = None,
                 only: np.ndarray | None = None, current: np.ndarray | None = None) -> None:
    """Replace the segment's voxels inside ``box`` (exclusive, voxels of ``geometry``: voxel -> segmentation RAS)
    by ``region`` (uint8 0/1, z, y, x); nothing outside the box changes; ``overwrite_ids`` lose the new foreground.

    ``only`` (bool, box-shaped): write just these voxels and keep the others as they are (then ``current``, the
    segment's values in the box on the volume grid, is needed for segments on another grid).

    On the segment's own grid (the usual case) the values go in place into its internal labelmap, as
    ``slicer.util.arrayFromSegmentInternalBinaryLabelmap`` documents (time ~ box size); a segment sharing its
    layer with a protected one first gets its own layer. On another grid Slicer's ``SetBinaryLabelmapToSegment``
    resamples (nearest neighbour); RuntimeError if it refuses.
    """
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    added = region > 0 if only is None else (region > 0) & only
    sharing = segmentation.GetSegmentIDsForLayer(segmentation.GetLayerIndex(segment_id))
    if any(s != segment_id and s not in overwrite_ids for s in sharing) and added.any():
        segmentation.SeparateSegmentLabelmap(segment_id)  # never write over a protected segment's labels
    layer = _layer_on_grid(segment, geometry, box, grid_size_xyz)
    if layer is None:
        merged = region if only is None else np.where(only, region, current).astype(np.uint8)
        _write_resampled(segmentation_node, segment_id, geometry, box, merged, overwrite_ids)
        return
    label = segment.GetLabelValue()
    view = _box_view(layer, box)
    cleared = region == 0 if only is None else (region == 0) & only
    view[(view == label) & cleared] = 0
    view[added] = label
    layer.Modified()  # -> SourceRepresentationModified: displays and derived representations update
    segment.Modified()
    if overwrite_ids and added.any():
        _erase_from_other_layers(segmentation_node, segment_id, geometry, box, added.astype(np.uint8), overwrite_ids)


def segment_mask(segmentation_node: Any, segment_id: str, volume_node: Any, shape_zyx: Sequence[int]) -> np.ndarray:
    """The segment as uint8 (z, y, x) on the volume's voxel grid: read from its labelmap when that is on the
    volume's grid (exact), else exported by Slicer (resampled). Empty when it has no binary labelmap."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    name = _slicer().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    layer = segment.GetRepresentation(name) if segment is not None else None
    out = np.zeros(tuple(shape_zyx), dtype=np.uint8)
    if layer is None or _is_empty(layer):
        return out
    if not _on_grid(layer, labelmap_geometry(volume_node, segmentation_node)):
        exported = _slicer().util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
        return (np.asarray(exported) > 0).astype(np.uint8)
    size_xyz = tuple(int(v) for v in shape_zyx)[::-1]
    box = _intersect(_clip_box(layer, ((0, 0, 0), size_xyz)), (0, 0, 0), size_xyz)
    if box is not None:
        _crop(out, box)[...] = _box_view(layer, box) == segment.GetLabelValue()
    return out


def labelmap_mtime(segmentation_node: Any, segment_id: str) -> int:
    """Modification time of the labelmap holding the segment (changes with every edit; 0 if none)."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    name = _slicer().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    layer = segment.GetRepresentation(name) if segment is not None else None
    return 0 if layer is None else int(layer.GetMTime())


def show_segment(segmentation_node: Any, segment_id: str) -> None:
    """Make the segment visible in the views: display nodes (a segmentation made from a node selector has
    none), the segmentation and the segment shown."""
    if segmentation_node.GetDisplayNode() is None:
        segmentation_node.CreateDefaultDisplayNodes()
    display = segmentation_node.GetDisplayNode()
    display.SetVisibility(True)
    display.SetSegmentVisibility(segment_id, True)


def show_3d(segmentation_node: Any, is_shown: bool) -> None:
    """Show the segments as surfaces in 3-D views (Slicer's "Show 3D": the closed-surface representation)."""
    if is_shown:
        segmentation_node.CreateClosedSurfaceRepresentation()
    else:
        segmentation_node.RemoveClosedSurfaceRepresentation()


def _is_empty(image: Any) -> bool:
    return any(high < low for low, high in zip(image.GetExtent()[0::2], image.GetExtent()[1::2]))


def _on_grid(image: Any, geometry: np.ndarray) -> bool:
    import vtk
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    tolerance = 1e-6 * max(1.0, np.abs(geometry).max())
    return bool(np.allclose(_slicer().util.arrayFromVTKMatrix(matrix), geometry, rtol=0.0, atol=tolerance))


def _image_array(image: Any) -> np.ndarray:
    from vtk.util import numpy_support
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)


def _crop(array_zyx: np.ndarray, box: BBox3D, origin_xyz: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """View of the (z, y, x) array inside ``box``; ``origin_xyz`` is the voxel index of ``array_zyx[0, 0, 0]``."""
    (i0, j0, k0), (i1, j1, k1), (a, b, c) = box[0], box[1], origin_xyz
    return array_zyx[k0 - c:k1 - c, j0 - b:j1 - b, i0 - a:i1 - a]


def _box_view(image: Any, box: BBox3D) -> np.ndarray:
    return _crop(_image_array(image), box, image.GetExtent()[0::2])


def _layer_on_grid(segment: Any, geometry: np.ndarray, box: BBox3D, grid_size_xyz: Sequence[int] | None) -> Any:
    """The segment's layer labelmap grown to cover ``box`` (plus a box-size margin inside the grid, so that
    nearby clicks do not regrow it), or None when it is on another grid."""
    import vtk
    layer = segment.GetRepresentation(_slicer().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    is_empty = _is_empty(layer)
    if is_empty:
        layer.SetImageToWorldMatrix(_slicer().util.vtkMatrixFromArray(geometry))
    elif not _on_grid(layer, geometry) or segment.GetLabelValue() > layer.GetScalarTypeMax():
        return None
    old = layer.GetExtent()
    if is_empty or _intersect(box, old[0::2], np.add(old[1::2], 1)) != tuple(map(tuple, box)):
        margin = np.subtract(box[1], box[0]) if grid_size_xyz is not None else 0
        limit = np.subtract(grid_size_xyz, 1) if grid_size_xyz is not None else np.inf
        low = np.maximum(np.subtract(box[0], margin), 0)
        high = np.minimum(np.add(box[1], margin) - 1, limit)
        if not is_empty:
            low, high = np.minimum(low, old[0::2]), np.maximum(high, old[1::2])
        kept = None if is_empty else _image_array(layer).copy()
        layer.SetExtent(*(int(v) for pair in zip(low, high) for v in pair))
        layer.AllocateScalars(vtk.VTK_UNSIGNED_CHAR if is_empty else layer.GetScalarType(), 1)
        _image_array(layer)[:] = 0
        if kept is not None:
            _box_view(layer, ((old[0], old[2], old[4]), (old[1] + 1, old[3] + 1, old[5] + 1)))[:] = kept
    return layer


def _intersect(box: BBox3D | None, low: Sequence[int], high: Sequence[int]) -> BBox3D | None:
    """``box`` clipped to [low, high) per axis (x, y, z), or None when empty."""
    if box is None:
        return None
    lo = tuple(max(int(a), int(b)) for a, b in zip(box[0], low))
    hi = tuple(min(int(a), int(b)) for a, b in zip(box[1], high))
    return None if any(h <= v for v, h in zip(lo, hi)) else (lo, hi)  # type: ignore[return-value]


def _clip_box(image: Any, box: BBox3D) -> BBox3D | None:
    e = image.GetExtent()
    return _intersect(box, e[0::2], [v + 1 for v in e[1::2]])


def _erase_from_other_layers(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D,
                             region: np.ndarray, overwrite_ids: Sequence[str]) -> None:
    """Remove the new foreground from overwritten segments in other layers (same layer: done by the write)."""
    segmentation = segmentation_node.GetSegmentation()
    binary = _slicer().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    for sid in (s for s in overwrite_ids if segmentation.GetLayerIndex(s) != segmentation.GetLayerIndex(segment_id)):
        segment = segmentation.GetSegment(sid)
        layer = segment.GetRepresentation(binary)
        clipped = None if _is_empty(layer) else _clip_box(layer, box)
        if clipped is None:
            continue
        if not _on_grid(layer, geometry):
            _write_resampled(segmentation_node, sid, geometry, box, np.where(region > 0, 0, 255).astype(np.uint8), (),
                             modes=("min",))
            continue
        view = _box_view(layer, clipped)
        view[(view == segment.GetLabelValue()) & (_crop(region, clipped, box[0]) > 0)] = 0
        layer.Modified()
        segment.Modified()


def _write_resampled(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D, region: np.ndarray,
                     overwrite_ids: Sequence[str], modes: Sequence[str] = ("min", "mask")) -> None:
    """Slicer's own merge (resamples to the segment's grid): clear the box's background (min), set its foreground."""
    import vtk
    logic = _slicer().vtkSlicerSegmentationsModuleLogic
    (i0, j0, k0), (i1, j1, k1) = box
    image = _oriented_image(geometry, (i0, i1 - 1, j0, j1 - 1, k0, k1 - 1))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    _image_array(image)[:] = region
    steps = {"min": (logic.MODE_MERGE_MIN, not region.all()), "mask": (logic.MODE_MERGE_MASK, region.any())}
    for mode, is_needed in (steps[m] for m in modes):
        if is_needed and not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, mode,
                                                              image.GetExtent(), False, list(overwrite_ids)):
            raise RuntimeError(f"Slicer could not write segment '{segment_id}' of '{segmentation_node.GetName()}'.")
    if "mask" in modes and overwrite_ids and region.any():
        inverted = np.where(region > 0, 0, 255).astype(np.uint8)
        for sid in overwrite_ids:
            _write_resampled(segmentation_node, sid, geometry, box, inverted, (), modes=("min",))


def _checked_overwrite(mode: str) -> OverwriteMode:
    if mode not in ("none", "visible", "all"):
        raise ValueError(f"Unknown overwrite mode {mode!r}: use 'none', 'visible' or 'all'.")
    return mode  # type: ignore[return-value]


def overwrite_ids(segmentation_node: Any, segment_id: str, mode: OverwriteMode) -> list[str]:
    """Segments the Segment Editor would overwrite in ``mode`` ("none", "visible", "all")."""
    segmentation = segmentation_node.GetSegmentation()
    others = [s for s in segmentation.GetSegmentIDs() if s != segment_id]
    if _checked_overwrite(mode) == "none":
        return []
    display = segmentation_node.GetDisplayNode()
    if mode == "visible" and display is not None:
        return [s for s in others if display.GetSegmentVisibility(s)]
    return others


# ---- clicks stored with the segment ----------------------------------------------------
def store_clicks(segment: Any, points_ras: np.ndarray, labels: Sequence[bool], config: SessionConfig) -> None:
    """Write the clicks (volume-local RAS (N, 3), labels) into the segment tag ``CLICKS_TAG``."""
    payload = {"version": CLICKS_FORMAT_VERSION, "frame": "volume-local RAS (mm)",
               "points_ras": np.asarray(points_ras, dtype=np.float64).reshape(-1, 3).tolist(),
               "labels": [int(bool(v)) for v in labels], "use_cpp": config.use_cpp, "max_patches": config.max_patches,
               "cpp_reach_depth": config.cpp_reach_depth if math.isfinite(config.cpp_reach_depth) else None}
    segment.SetTag(CLICKS_TAG, json.dumps(payload, separators=(",", ":")))


def read_clicks(segment: Any) -> tuple[np.ndarray, tuple[bool, ...]]:
    """The segment's stored clicks: volume-local RAS (N, 3), labels (True = positive); ValueError if unreadable."""
    import vtk
    text = vtk.reference("")
    if segment is None or not segment.GetTag(CLICKS_TAG, text) or not str(text):
        return np.zeros((0, 3)), ()
    try:
        data = json.loads(str(text))
        if data.get("version") != CLICKS_FORMAT_VERSION:
            raise ValueError(f"version {data.get('version')!r}")
        points = np.asarray(data["points_ras"], dtype=np.float64).reshape(-1, 3)
        labels = tuple(bool(v) for v in data["labels"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"Segment '{segment.GetName()}' has an unreadable {CLICKS_TAG} tag: {exc}") from exc
    if len(labels) != len(points):
        raise ValueError(f"Segment '{segment.GetName()}': {len(points)} stored points but {len(labels)} labels.")
    return points, labels


# ---- engine jobs -----------------------------------------------------------------------
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


class DeviceOutOfMemory(RuntimeError):
    """The device ran out of memory during a job; the segment and the session are as before it."""


def _union(boxes: Sequence[BBox3D | None]) -> BBox3D | None:
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    low = tuple(int(min(b[0][a] for b in real)) for a in range(3))
    high = tuple(int(max(b[1][a] for b in real)) for a in range(3))
    return low, high  # type: ignore[return-value]


def _is_out_of_memory(error: BaseException) -> bool:
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


class SegmentationSession:
    """Click-to-segment on one volume node into one segmentation node; one engine target per segment.

    The CT volume node's voxels are copied once; a segmentation without segments is put on its grid.
    ``overwrite``: "none" (default: other segments untouched), "visible" or "all".

    A segment's voxels are the truth: when they changed outside CTSAM3D since its last write (or were never
    written by it), the next click starts the engine from them (``Session.set_target_mask``), so that no
    click removes voxels it did not ask to remove; CTSAM3D's undo then stops at that content.
    """

    def __init__(self, volume_node: Any, segmentation_node: Any, predictor: Any, config: SessionConfig | None = None,
                 overwrite: OverwriteMode = "none") -> None:
        if segmentation_node is None or not segmentation_node.IsA("vtkMRMLSegmentationNode"):
            raise ValueError("Select a segmentation node for the results.")
        volume = volume_from_node(volume_node)
        self.volume_node, self.segmentation_node = volume_node, segmentation_node
        if not isinstance(predictor, CancellablePredictor):
            predictor = CancellablePredictor(predictor)
        self.engine = Session(predictor, config or SessionConfig())
        self.engine.set_volume(volume)
        self.overwrite = _checked_overwrite(overwrite)
        self._ijk_to_ras = ijk_to_ras_matrix(volume_node)
        self._shape_xyz = volume.shape_xyz
        self._volume_mtime = volume_node.GetImageData().GetMTime()
        self._replayed: set[str] = set()  # segments whose stored clicks are in the engine (set by ``run``)
        self._written: dict[str, int] = {}  # segment -> its labelmap's MTime right after our last write
        self._pending: dict[str, int] = {}  # segment -> jobs prepared but not yet committed or discarded
        ensure_reference_geometry(volume_node, segmentation_node)
        if segmentation_node.GetDisplayNode() is None:
            segmentation_node.CreateDefaultDisplayNodes()

    def matches(self, volume_node: Any, segmentation_node: Any, predictor: Any) -> bool:
        """Whether this session still serves these nodes and this predictor (volume unchanged)."""
        base = getattr(predictor, "predictor", predictor)
        return (volume_node is self.volume_node and segmentation_node is self.segmentation_node
                and base is getattr(self.engine.predictor, "predictor", None) and volume_node.GetImageData() is not None
                and volume_node.GetImageData().GetMTime() == self._volume_mtime
                and np.array_equal(ijk_to_ras_matrix(volume_node), self._ijk_to_ras))

    def configure(self, config: SessionConfig | None = None, overwrite: OverwriteMode | None = None) -> None:
        """Change the engine settings and the overwrite mode for the next jobs."""
        if config is not None:
            self.engine.config = config
        if overwrite is not None:
            self.overwrite = _checked_overwrite(overwrite)

    # ---- main thread: MRML -> jobs ------------------------------------------------------
    def add_segment(self, name: str = "") -> str:
        """Add an empty segment (Slicer picks name and colour when ``name`` is empty); returns its ID."""
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
        stored = (np.zeros((0, 3)), ()) if segment_id in self._replayed else read_clicks(self.segment(segment_id))
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

    def discard(self, job: Job) -> None:
        """Forget a prepared job that will not be committed (it failed or was cancelled)."""
        count = self._pending.get(job.segment_id, 0) - 1
        if count > 0:
            self._pending[job.segment_id] = count
        else:
            self._pending.pop(job.segment_id, None)

    # ---- any thread: engine only --------------------------------------------------------
    def run(self, job: Job) -> Outcome:
        """Execute the job on the engine (no MRML): safe on a worker thread, one job at a time.

        Raises ValueError (point outside the volume, first click negative), ClickCancelled or
        DeviceOutOfMemory; the engine is then as before the job.
        """
        try:
            return self._run(job)
        except (ClickCancelled, ValueError):
            raise
        except Exception as exc:
            if not _is_out_of_memory(exc):
                raise
            import torch
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            device = getattr(self.engine.predictor, "device", "device")
            raise DeviceOutOfMemory(
                f"The {device} ran out of memory during this click; the segment is unchanged and you can go on. "
                "Lower 'Most patches per click', close other programs using the GPU, or choose the CPU.") from exc

    def _run(self, job: Job) -> Outcome:
        t0, eng, tid = time.perf_counter(), self.engine, job.segment_id
        boxes, patches, cpp = [self._replay(job)], 0, 0
        changed, seeded, before = True, False, None
        if job.content is not None and not np.array_equal(job.content, eng.mask(tid)):
            if job.kind in ("click", "restore"):
                boxes.append(eng.set_target_mask(job.content, tid))
                seeded = True
            else:
                before = np.array(eng.mask(tid), copy=True)  # write only what the engine changes
        if job.kind == "click" and job.point_ras is not None:
            boxes.append(eng.add_click(job.point_ras, job.is_positive, frame="ras", target=tid))
            patches, cpp = int(eng.last_stats.get("patches", 0)), int(eng.last_stats.get("cpp_patches", 0))
        elif job.kind in ("undo", "redo"):
            changed = eng.undo(tid) if job.kind == "undo" else eng.redo(tid)
            boxes.append(eng.last_change if changed else None)
        elif job.kind == "reset":
            eng.reset(tid)
            boxes.append(eng.last_change)
        box = _intersect(_union(boxes), (0, 0, 0), self._shape_xyz)
        region = None if box is None else np.array(_crop(eng.mask(tid), box), dtype=np.uint8, copy=True)
        only = None if before is None or region is None else _crop(before, box) != region
        ras, labels = self._clicks_ras(tid)
        return Outcome(job, changed, box, region, ras, labels, time.perf_counter() - t0, patches, cpp, only, seeded)

    def _clicks_ras(self, segment_id: str) -> tuple[np.ndarray, tuple[bool, ...]]:
        clicks = self.engine.clicks(segment_id)
        ijk = np.array([c.point_xyz for c in clicks], dtype=np.float64).reshape(-1, 3)
        return ijk @ self._ijk_to_ras[:3, :3].T + self._ijk_to_ras[:3, 3], tuple(c.is_positive for c in clicks)

    def _replay(self, job: Job) -> BBox3D | None:
        """Replay the stored clicks once per session, into a target without clicks; a failed or cancelled
        replay leaves no state, so the next job replays again (the stored clicks are never lost)."""
        tid = job.segment_id
        if tid in self._replayed:
            return None
        boxes = []
        if job.replay_labels and not self.engine.clicks(tid):
            try:
                for point, label in zip(job.replay_ras, job.replay_labels):
                    boxes.append(self.engine.add_click(point, label, frame="ras", target=tid))
            except BaseException:
                self.engine.remove_target(tid)
                raise
        self._replayed.add(tid)
        return _union(boxes)

    # ---- main thread: outcome -> MRML ---------------------------------------------------
    def commit(self, outcome: Outcome) -> Outcome:
        """Write the outcome: the changed box into the segment (shown in the views), the clicks into its tag.

        A restore that found the segment edited outside CTSAM3D keeps the stored clicks until the next click.
        """
        job = outcome.job
        sid = job.segment_id
        try:
            segment = self.segment(sid)
            if outcome.box is not None and outcome.region is not None:
                geometry = labelmap_geometry(self.volume_node, self.segmentation_node)
                current = None if outcome.only is None or job.content is None else _crop(job.content, outcome.box)
                write_region(self.segmentation_node, sid, geometry, outcome.box, outcome.region,
                             overwrite_ids(self.segmentation_node, sid, self.overwrite), self._shape_xyz,
                             outcome.only, current)
            if not (job.kind == "restore" and outcome.seeded):
                store_clicks(segment, outcome.clicks_ras, outcome.labels, self.engine.config)
            if job.kind == "click":
                show_segment(self.segmentation_node, sid)
            self._written[sid] = labelmap_mtime(self.segmentation_node, sid)
        finally:
            self.discard(job)
        return outcome

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
        """The segment's current clicks in world RAS (N, 3) and their polarities."""
        ras, labels = self._clicks_ras(segment_id)
        return self.to_world(ras), labels

    def to_world(self, points_ras: np.ndarray) -> np.ndarray:  # volume-local RAS (N, 3) -> world RAS
        return local_to_world(self.volume_node, points_ras) if len(points_ras) else np.zeros((0, 3))

    def close(self) -> None:
        """Free the engine (volume copy, masks, cached features)."""
        self.engine.close()


# ---- worker thread ---------------------------------------------------------------------
@dataclass
class JobResult:
    """A finished worker job: its outcome (committed) or the error it raised."""

    session: SegmentationSession
    job: Job
    outcome: Outcome | None = None
    error: BaseException | None = None

    def clicks_world(self) -> tuple[np.ndarray, tuple[bool, ...]]:
        """The job's segment clicks in world RAS (as committed; the engine's current ones after an error)."""
        out = self.outcome
        return self.session.clicks_world(self.job.segment_id) if out is None else (
            self.session.to_world(out.clicks_ras), out.labels)


class ClickWorker:
    """One persistent worker thread running engine jobs in order; ``poll`` commits them on the caller's thread.

    Slicer's main thread holds the Python GIL while idle in the Qt event loop, so the worker runs Python only
    while the main thread waits: call ``poll(wait_s=...)`` from a short timer; its wait releases the GIL.
    """

    def __init__(self) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="CTSAM3D")
        self._event = threading.Event()
        self._pending: deque[tuple[Future, SegmentationSession, Job]] = deque()

    @property
    def busy(self) -> bool:  # jobs queued, running or not yet polled
        return bool(self._pending)

    def submit(self, session: SegmentationSession, job: Job) -> Future:
        """Queue ``session.run(job)`` (``job`` from ``session.prepare*``; ``poll`` commits or discards it)."""
        future = self._executor.submit(self._call, self._event, session, job)
        self._pending.append((future, session, job))
        return future

    @staticmethod
    def _call(event: threading.Event, session: SegmentationSession, job: Job) -> Outcome:
        _cancel_state.event = event  # read by CancellablePredictor before each network call
        try:
            if event.is_set():
                raise ClickCancelled("Cancelled before it started.")
            return session.run(job)
        finally:
            _cancel_state.event = None

    def cancel(self) -> None:
        """Cancel the running job (at its next network call) and every queued one."""
        self._event.set()
        self._event = threading.Event()

    def poll(self, wait_s: float = 0.0) -> list[JobResult]:
        """Commit finished jobs in submission order (call on the main thread); returns them.

        ``wait_s``: first wait up to this long for the oldest job, releasing the GIL meanwhile.
        """
        if wait_s > 0 and self._pending:
            wait([self._pending[0][0]], timeout=wait_s)
        results = []
        while self._pending and self._pending[0][0].done():
            future, session, job = self._pending.popleft()
            result = JobResult(session, job)
            try:
                outcome = future.result()
            except Exception as exc:  # reported to the caller, who shows it
                session.discard(job)
                result.error = exc
            else:
                try:
                    result.outcome = session.commit(outcome)
                except Exception as exc:
                    result.error = exc
            results.append(result)
        return results

    def wait(self, timeout_s: float = 60.0) -> list[JobResult]:
        """Block until all jobs finished, then ``poll`` (scripting and tests)."""
        wait([future for future, _, _ in self._pending], timeout=timeout_s)
        return self.poll()

    def shutdown(self) -> None:
        """Cancel everything and stop the thread."""
        self.cancel()
        self._executor.shutdown(wait=True)
        for _, session, job in self._pending:
            session.discard(job)
        self._pending.clear()


# ---- prompts as markups ----------------------------------------------------------------
class PromptMarkups:
    """Positive (green) and negative (red) markups fiducial nodes whose placed points become clicks.

    A control point whose position becomes defined (``PointPositionDefinedEvent``: placed in a view or
    set from Python) calls ``on_point(point_world_ras (3,), is_positive)`` once, then is locked (= used).
    ``show`` redraws a segment's clicks without clicking. Not saved with the scene (the segment keeps the clicks).
    """

    def __init__(self, scene: Any, on_point: Callable[[np.ndarray, bool], None], name: str = "CTSAM3D") -> None:
        self.on_point = on_point
        self.positive_node = self._make_node(scene, f"{name} include", POSITIVE_COLOR)
        self.negative_node = self._make_node(scene, f"{name} exclude", NEGATIVE_COLOR)
        self._is_syncing = False
        self._observations = [(n, n.AddObserver(n.PointPositionDefinedEvent, self._on_defined))
                              for n in (self.positive_node, self.negative_node)]

    @staticmethod
    def _make_node(scene: Any, name: str, color: tuple[float, float, float]) -> Any:
        node = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetSaveWithScene(False)
        node.SetMarkupLabelFormat("")
        display = node.GetDisplayNode()
        display.SetSaveWithScene(False)
        for set_color in (display.SetSelectedColor, display.SetColor, display.SetActiveColor):
            set_color(*color)
        return node

    def node(self, is_positive: bool) -> Any:
        """The fiducial node of that polarity."""
        return self.positive_node if is_positive else self.negative_node

    def _on_defined(self, caller: Any, _event: Any) -> None:
        if self._is_syncing:
            return
        is_positive = caller.GetID() == self.positive_node.GetID()
        new_points = []
        for n in range(caller.GetNumberOfControlPoints()):  # handled points are locked (IDs get reused)
            is_defined = caller.GetNthControlPointPositionStatus(n) == caller.PositionDefined
            if caller.GetNthControlPointLocked(n) or not is_defined:
                continue
            caller.SetNthControlPointLocked(n, True)
            world = np.zeros(3)
            caller.GetNthControlPointPositionWorld(n, world)
            new_points.append(world)
        for world in new_points:
            self.on_point(world, is_positive)

    def show(self, points_world: np.ndarray, labels: Sequence[bool]) -> None:
        """Replace the displayed points by these (world RAS (N, 3), polarities)."""
        self._is_syncing = True
        try:
            for is_positive in (True, False):
                node = self.node(is_positive)
                was_modifying = node.StartModify()
                node.RemoveAllControlPoints()
                for point, label in zip(np.asarray(points_world).reshape(-1, 3), labels):
                    if bool(label) == is_positive:
                        index = node.AddControlPointWorld([float(v) for v in point])
                        node.SetNthControlPointLocked(index, True)
                node.EndModify(was_modifying)
        finally:
            self._is_syncing = False

    def remove(self) -> None:
        """Stop observing and remove both nodes from the scene."""
        for node, tag in self._observations:
            node.RemoveObserver(tag)
            if node.GetScene() is not None:
                node.GetScene().RemoveNode(node)
        self._observations = []


# ---- logic core ------------------------------------------------------------------------
class BridgeLogic:
    """Qt-free core of ``CTSAM3DLogic``: the model, one active session, the worker, the scripting API.

    Console example: ``segment_id = logic.segment(volume, segmentation, None, [[12.0, -40.5, 88.0]], [1])``,
    then ``logic.session(volume, segmentation).click([15.0, -38.0, 90.0], False, segment_id)`` (see docs/slicer.md).
    """

    def __init__(self) -> None:
        self.predictor: CancellablePredictor | None = None
        self.config = SessionConfig()
        self.overwrite: OverwriteMode = "none"
        self._predictor_key: tuple | None = None
        self._session: SegmentationSession | None = None
        self._worker: ClickWorker | None = None

    @staticmethod
    def available_devices() -> list[str]:
        """``["cuda", "cpu"]`` when PyTorch sees a GPU, else ``["cpu"]``."""
        import torch
        return ["cuda", "cpu"] if torch.cuda.is_available() else ["cpu"]

    def load_model(self, path: str | Path | None = None, device: str | None = None,
                   window_hu: tuple[float, float] | None = None) -> CancellablePredictor:
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
        self.predictor = predictor if isinstance(predictor, CancellablePredictor) else CancellablePredictor(predictor)
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
        current.configure(self.config, self.overwrite)
        return current

    def configure(self, use_cpp: bool | None = None, max_patches: int | None = None,
                  overwrite: OverwriteMode | None = None, cpp_reach_depth: float | None = None) -> None:
        """Change CPP on/off, its most patches per click, the overwrite mode and CPP's reach depth (``math.inf``:
        off; `LARGE_ORGAN_REACH_DEPTH` for large organs, see ``SessionConfig``); applies to the active session.
        """
        if max_patches is not None and int(max_patches) < 1:
            raise ValueError("max_patches must be at least 1.")
        changes: dict[str, Any] = {"use_cpp": use_cpp, "max_patches": max_patches,
                                   "cpp_reach_depth": None if cpp_reach_depth is None else float(cpp_reach_depth)}
        self.config = dataclasses.replace(self.config, **{k: v for k, v in changes.items() if v is not None})
        self.overwrite = _checked_overwrite(overwrite or self.overwrite)
        if self._session is not None:
            self._session.configure(self.config, self.overwrite)

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
