"""Segment voxels and segment tags: box writes with the overwrite rules, reads, display, stored clicks.

Only the box the engine changed is written into the target segment, on the volume's voxel grid in
the segmentation's frame. Other segments change only with ``overwrite`` ("visible" or "all", as the
Segment Editor's overwrite setting). The clicks are stored in the segment tag ``CTSAM3D.Clicks``
(JSON, volume-local RAS + labels), saved with the segmentation (.seg.nrrd, .mrb).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.engine.session import SessionConfig
from CTSAM3DLib.mrml.geometry import (
    box_view, clip_box, crop, image_array, intersect, is_empty, labelmap_geometry, on_grid, oriented_image, slicer_api)

# Segment tag holding the segment's clicks as JSON (saved with the segmentation), and its format version.
CLICKS_TAG, CLICKS_FORMAT_VERSION = "CTSAM3D.Clicks", 1
OverwriteMode = Literal["none", "visible", "all"]


def write_region(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D, region: np.ndarray,
                 overwrite_ids: Sequence[str] = (), grid_size_xyz: Sequence[int] | None = None,
                 only: np.ndarray | None = None, current: np.ndarray | None = None) -> bool:
    """Replace the segment's voxels inside ``box`` (exclusive, voxels of ``geometry``: voxel -> segmentation RAS)
    by ``region`` (uint8 0/1, z, y, x); nothing outside the box changes; ``overwrite_ids`` lose the new foreground.

    ``only`` (bool, box-shaped): write just these voxels and keep the others as they are (then ``current``, the
    segment's values in the box on the volume grid, is needed for segments on another grid).

    On the segment's own grid (the usual case) the values go in place into its internal labelmap, as
    ``slicer.util.arrayFromSegmentInternalBinaryLabelmap`` documents (time ~ box size). Segments share a
    labelmap layer while they do not overlap; a segment whose new voxels would cover a protected segment of
    its layer first gets a layer of its own. On another grid Slicer's ``SetBinaryLabelmapToSegment``
    resamples (nearest neighbour); RuntimeError if it refuses.

    Returns:
        Whether other segments (may have) lost voxels to this write.
    """
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id)
    added = region > 0 if only is None else (region > 0) & only
    sharing = segmentation.GetSegmentIDsForLayer(segmentation.GetLayerIndex(segment_id))
    protected = [s for s in sharing if s != segment_id and s not in overwrite_ids]
    if protected and added.any() and _covers(segmentation, segment_id, geometry, box, added, protected):
        segmentation.SeparateSegmentLabelmap(segment_id)  # never write over a protected segment's labels
    layer = _layer_on_grid(segment, geometry, box, grid_size_xyz)
    if layer is None:
        merged = region if only is None else np.where(only, region, current).astype(np.uint8)
        _write_resampled(segmentation_node, segment_id, geometry, box, merged, overwrite_ids)
        return bool(overwrite_ids) and bool(added.any())
    label = segment.GetLabelValue()
    view = box_view(layer, box)
    shared_labels = [segmentation.GetSegment(s).GetLabelValue() for s in overwrite_ids
                     if segmentation.GetLayerIndex(s) == segmentation.GetLayerIndex(segment_id)]
    took = bool(shared_labels) and bool(np.isin(view[added], shared_labels).any())
    cleared = region == 0 if only is None else (region == 0) & only
    view[(view == label) & cleared] = 0
    view[added] = label
    layer.Modified()  # -> SourceRepresentationModified: displays and derived representations update
    segment.Modified()
    if overwrite_ids and added.any():
        took |= _erase_from_other_layers(segmentation_node, segment_id, geometry, box, added.astype(np.uint8),
                                         overwrite_ids)
    return took


def _covers(segmentation: Any, segment_id: str, geometry: np.ndarray, box: BBox3D, added: np.ndarray,
            protected: Sequence[str]) -> bool:
    """Whether ``added`` (bool, box-shaped) covers voxels of a ``protected`` segment in the segment's layer
    (True when that cannot be read voxel-exactly)."""
    layer = segmentation.GetSegment(segment_id).GetRepresentation(
        slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    if layer is None or is_empty(layer):
        return False
    if not on_grid(layer, geometry):
        return True
    clipped = clip_box(layer, box)
    if clipped is None:
        return False
    labels = [segmentation.GetSegment(s).GetLabelValue() for s in protected]
    return bool(np.isin(box_view(layer, clipped)[crop(added, clipped, box[0])], labels).any())


def segment_mask(segmentation_node: Any, segment_id: str, volume_node: Any, shape_zyx: Sequence[int]) -> np.ndarray:
    """The segment as uint8 (z, y, x) on the volume's voxel grid: read from its labelmap when that is on the
    volume's grid (exact), else exported by Slicer (resampled). Empty when it has no binary labelmap."""
    size_xyz = tuple(int(v) for v in shape_zyx)[::-1]
    return segment_values(segmentation_node, segment_id, volume_node, ((0, 0, 0), size_xyz))  # type: ignore[arg-type]


def segment_values(segmentation_node: Any, segment_id: str, volume_node: Any, box: BBox3D) -> np.ndarray:
    """The segment as uint8 (z, y, x) inside ``box`` (volume voxel indices, exclusive, inside the volume), read
    as ``segment_mask`` reads it."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    name = slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    layer = segment.GetRepresentation(name) if segment is not None else None
    (i0, j0, k0), (i1, j1, k1) = box
    out = np.zeros((k1 - k0, j1 - j0, i1 - i0), dtype=np.uint8)
    if layer is None or is_empty(layer):
        return out
    if not on_grid(layer, labelmap_geometry(volume_node, segmentation_node)):
        exported = slicer_api().util.arrayFromSegmentBinaryLabelmap(segmentation_node, segment_id, volume_node)
        return (crop(np.asarray(exported), box) > 0).astype(np.uint8)
    clipped = clip_box(layer, box)
    if clipped is not None:
        crop(out, clipped, box[0])[...] = box_view(layer, clipped) == segment.GetLabelValue()
    return out


def labelmap_mtime(segmentation_node: Any, segment_id: str) -> int:
    """Modification time of the labelmap holding the segment (changes with every edit; 0 if none)."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    name = slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
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


def _layer_on_grid(segment: Any, geometry: np.ndarray, box: BBox3D, grid_size_xyz: Sequence[int] | None) -> Any:
    """The segment's layer labelmap grown to cover ``box`` (plus a box-size margin inside the grid, so that
    nearby clicks do not regrow it), or None when it is on another grid."""
    import vtk
    layer = segment.GetRepresentation(slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName())
    empty = is_empty(layer)
    if empty:
        layer.SetImageToWorldMatrix(slicer_api().util.vtkMatrixFromArray(geometry))
    elif not on_grid(layer, geometry) or segment.GetLabelValue() > layer.GetScalarTypeMax():
        return None
    old = layer.GetExtent()
    if empty or intersect(box, old[0::2], np.add(old[1::2], 1)) != tuple(map(tuple, box)):
        margin = np.subtract(box[1], box[0]) if grid_size_xyz is not None else 0
        limit = np.subtract(grid_size_xyz, 1) if grid_size_xyz is not None else np.inf
        low = np.maximum(np.subtract(box[0], margin), 0)
        high = np.minimum(np.add(box[1], margin) - 1, limit)
        if not empty:
            low, high = np.minimum(low, old[0::2]), np.maximum(high, old[1::2])
        kept = None if empty else image_array(layer).copy()
        layer.SetExtent(*(int(v) for pair in zip(low, high) for v in pair))
        layer.AllocateScalars(vtk.VTK_UNSIGNED_CHAR if empty else layer.GetScalarType(), 1)
        image_array(layer)[:] = 0
        if kept is not None:
            box_view(layer, ((old[0], old[2], old[4]), (old[1] + 1, old[3] + 1, old[5] + 1)))[:] = kept
    return layer


def _erase_from_other_layers(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D,
                             region: np.ndarray, overwrite_ids: Sequence[str]) -> bool:
    """Remove the new foreground from overwritten segments in other layers (same layer: done by the write);
    returns whether any of them (may have) lost voxels."""
    segmentation = segmentation_node.GetSegmentation()
    binary = slicer_api().vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    took = False
    for sid in (s for s in overwrite_ids if segmentation.GetLayerIndex(s) != segmentation.GetLayerIndex(segment_id)):
        segment = segmentation.GetSegment(sid)
        layer = segment.GetRepresentation(binary)
        clipped = None if is_empty(layer) else clip_box(layer, box)
        if clipped is None:
            continue
        if not on_grid(layer, geometry):
            _write_resampled(segmentation_node, sid, geometry, box, np.where(region > 0, 0, 255).astype(np.uint8), (),
                             modes=("min",))
            took = True
            continue
        view = box_view(layer, clipped)
        hit = (view == segment.GetLabelValue()) & (crop(region, clipped, box[0]) > 0)
        if hit.any():
            view[hit] = 0
            layer.Modified()
            segment.Modified()
            took = True
    return took


def _write_resampled(segmentation_node: Any, segment_id: str, geometry: np.ndarray, box: BBox3D, region: np.ndarray,
                     overwrite_ids: Sequence[str], modes: Sequence[str] = ("min", "mask")) -> None:
    """Slicer's own merge (resamples to the segment's grid): clear the box's background (min), set its foreground."""
    import vtk
    logic = slicer_api().vtkSlicerSegmentationsModuleLogic
    (i0, j0, k0), (i1, j1, k1) = box
    image = oriented_image(geometry, (i0, i1 - 1, j0, j1 - 1, k0, k1 - 1))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    image_array(image)[:] = region
    steps = {"min": (logic.MODE_MERGE_MIN, not region.all()), "mask": (logic.MODE_MERGE_MASK, region.any())}
    for mode, is_needed in (steps[m] for m in modes):
        if is_needed and not logic.SetBinaryLabelmapToSegment(image, segmentation_node, segment_id, mode,
                                                              image.GetExtent(), False, list(overwrite_ids)):
            raise RuntimeError(f"Slicer could not write segment '{segment_id}' of '{segmentation_node.GetName()}'.")
    if "mask" in modes and overwrite_ids and region.any():
        inverted = np.where(region > 0, 0, 255).astype(np.uint8)
        for sid in overwrite_ids:
            _write_resampled(segmentation_node, sid, geometry, box, inverted, (), modes=("min",))


def checked_overwrite(mode: str) -> OverwriteMode:
    if mode not in ("none", "visible", "all"):
        raise ValueError(f"Unknown overwrite mode {mode!r}: use 'none', 'visible' or 'all'.")
    return mode  # type: ignore[return-value]


def overwrite_ids(segmentation_node: Any, segment_id: str, mode: OverwriteMode) -> list[str]:
    """Segments the Segment Editor would overwrite in ``mode`` ("none", "visible", "all")."""
    segmentation = segmentation_node.GetSegmentation()
    others = [s for s in segmentation.GetSegmentIDs() if s != segment_id]
    if checked_overwrite(mode) == "none":
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
