"""MRML <-> numpy geometry: voxels and IJK->RAS of volume nodes, world <-> node-local RAS, labelmap grids.

Voxels come from ``slicer.util.arrayFromVolume`` (copied) with the node's own ``IJKToRAS`` ->
``Volume.from_ijk_to_ras``; no files, and never SimpleITK's geometry (Slicer reverses k for
left-handed images, so array and matrix must both come from Slicer). Clicks go from world RAS
(markups, views; parent transforms applied) to the volume's local RAS through its parent transform.
Arrays are ``(z, y, x)``; points ``(x, y, z)`` = R, A, S in mm; boxes ``((i0, j0, k0), (i1, j1, k1))``
exclusive. ``slicer``/``vtk`` are imported lazily (Slicer's own Python or the slicer-core wheel).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from CTSAM3DLib.aliases import BBox3D
from CTSAM3DLib.io.volume import Volume


def slicer_api() -> Any:
    """The ``slicer`` package, imported on first use (Slicer's own Python or the slicer-core wheel)."""
    import slicer
    return slicer


def ijk_to_ras_matrix(volume_node: Any) -> np.ndarray:
    """The volume node's own 4x4 IJK -> local RAS matrix (parent transforms not applied)."""
    import vtk
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return slicer_api().util.arrayFromVTKMatrix(matrix)


def check_volume_node(volume_node: Any) -> None:
    """Raise ValueError with a clear message unless the node is a one-component scalar volume with voxels."""
    if volume_node is None or not volume_node.IsA("vtkMRMLScalarVolumeNode") or volume_node.GetImageData() is None:
        raise ValueError("Select a scalar CT volume that has voxels as the input volume.")
    if volume_node.GetImageData().GetNumberOfScalarComponents() != 1:
        raise ValueError(f"Volume '{volume_node.GetName()}' has several components per voxel; CTSAM3D needs a CT.")


def volume_from_image(image: Any, ijk_to_ras: np.ndarray) -> Volume:
    """Copy a ``vtkImageData``'s voxels (z, y, x) with this 4x4 IJK -> RAS into a ``Volume`` (any thread: reads
    only the image object, which the caller keeps alive)."""
    from vtk.util import numpy_support

    dims = image.GetDimensions()
    array = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(dims[::-1])
    return Volume.from_ijk_to_ras(np.array(array, copy=True), ijk_to_ras)


def default_input_volume(scene: Any) -> Any:
    """The first scalar volume of the scene that is not a labelmap (a CT candidate), or None."""
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLScalarVolumeNode")
        if not node.IsA("vtkMRMLLabelMapVolumeNode"):
            return node
    return None


def _transform_points(source_node: Any, target_node: Any, points: np.ndarray) -> np.ndarray:
    """Map (N, 3) points from ``source_node``'s frame to ``target_node``'s (None = world); any transform."""
    import vtk
    transform = vtk.vtkGeneralTransform()
    slicer_api().vtkMRMLTransformNode.GetTransformBetweenNodes(source_node, target_node, transform)
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
    if not slicer_api().vtkMRMLTransformNode.GetMatrixTransformBetweenNodes(
            volume_node.GetParentTransformNode(), segmentation_node.GetParentTransformNode(), between):
        raise ValueError("The volume and the segmentation are related by a non-linear transform: harden it, or place "
                         "the segmentation under the same transform as the volume.")
    return slicer_api().util.arrayFromVTKMatrix(between) @ ijk_to_ras_matrix(volume_node)


def oriented_image(geometry: np.ndarray, extent: Sequence[int]) -> Any:
    """An empty ``vtkOrientedImageData`` with this voxel -> RAS matrix (4x4) and extent (i0, i1, j0, j1, k0, k1)."""
    image = slicer_api().vtkOrientedImageData()
    image.SetExtent(*[int(v) for v in extent])
    image.SetImageToWorldMatrix(slicer_api().util.vtkMatrixFromArray(geometry))
    return image


def ensure_reference_geometry(volume_node: Any, segmentation_node: Any) -> bool:
    """Put a segmentation without a reference geometry on the volume's voxel grid; True if set. One that has
    a geometry keeps it (also when it has no segments yet: the user may have chosen it in the Segment
    Editor); writes on another grid are resampled by Slicer instead of voxel-exact."""
    slicer = slicer_api()
    segmentation = segmentation_node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    if segmentation.GetConversionParameter(name):
        return False
    extent = volume_node.GetImageData().GetExtent()
    image = oriented_image(labelmap_geometry(volume_node, segmentation_node), extent)
    segmentation.SetConversionParameter(name, slicer.vtkSegmentationConverter.SerializeImageGeometry(image))
    role = segmentation_node.GetReferenceImageGeometryReferenceRole()
    segmentation_node.SetNodeReferenceID(role, volume_node.GetID())
    return True


def is_empty(image: Any) -> bool:
    """Whether the (oriented) image data has no voxels (an inverted extent)."""
    return any(high < low for low, high in zip(image.GetExtent()[0::2], image.GetExtent()[1::2]))


def on_grid(image: Any, geometry: np.ndarray) -> bool:
    """Whether the oriented image's voxel -> RAS matrix is ``geometry`` (4x4), up to rounding."""
    import vtk
    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    tolerance = 1e-6 * max(1.0, np.abs(geometry).max())
    return bool(np.allclose(slicer_api().util.arrayFromVTKMatrix(matrix), geometry, rtol=0.0, atol=tolerance))


def image_array(image: Any) -> np.ndarray:
    """Writable (z, y, x) numpy view of the image's scalars (its whole extent)."""
    from vtk.util import numpy_support
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    return numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)


def crop(array_zyx: np.ndarray, box: BBox3D, origin_xyz: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """View of the (z, y, x) array inside ``box``; ``origin_xyz`` is the voxel index of ``array_zyx[0, 0, 0]``."""
    (i0, j0, k0), (i1, j1, k1), (a, b, c) = box[0], box[1], origin_xyz
    return array_zyx[k0 - c:k1 - c, j0 - b:j1 - b, i0 - a:i1 - a]


def box_view(image: Any, box: BBox3D) -> np.ndarray:
    """Writable (z, y, x) view of the image's voxels inside ``box`` (voxel indices, exclusive; inside its extent)."""
    return crop(image_array(image), box, image.GetExtent()[0::2])


def intersect(box: BBox3D | None, low: Sequence[int], high: Sequence[int]) -> BBox3D | None:
    """``box`` clipped to [low, high) per axis (x, y, z), or None when empty."""
    if box is None:
        return None
    lo = tuple(max(int(a), int(b)) for a, b in zip(box[0], low))
    hi = tuple(min(int(a), int(b)) for a, b in zip(box[1], high))
    return None if any(h <= v for v, h in zip(lo, hi)) else (lo, hi)  # type: ignore[return-value]


def clip_box(image: Any, box: BBox3D) -> BBox3D | None:
    """``box`` clipped to the image's extent, or None when they do not overlap."""
    e = image.GetExtent()
    return intersect(box, e[0::2], [v + 1 for v in e[1::2]])


def union_boxes(boxes: Sequence[BBox3D | None]) -> BBox3D | None:
    """The smallest box holding every box given (None entries ignored); None when there is none."""
    real = [b for b in boxes if b is not None]
    if not real:
        return None
    low = tuple(int(min(b[0][a] for b in real)) for a in range(3))
    high = tuple(int(max(b[1][a] for b in real)) for a in range(3))
    return low, high  # type: ignore[return-value]
