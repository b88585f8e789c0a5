"""Whole-volume (or sub-box) resampling onto a model grid, for training and evaluation data.

Inference never materialises model space (`extract_patch` resamples one patch at a time);
training preprocesses each CT and its label masks once onto the model grid of the CT
(`ModelGrid.for_image`) and caches the result. This module does that resampling:

* CT: linear interpolation, voxels outside the image = `PAD_HU` (-1024 HU), float32.
* Labels: nearest neighbour, outside = 0, the label's own integer type.

A label is always resampled by physical (LPS) coordinates, so a label stored on a grid that
differs from its image's (other spacing, origin, size or direction) still lands in the right
place. A label whose world box does not overlap its image at all is refused with
`GridMismatchError`, because it cannot belong to that image.

Arrays are ``(z, y, x)``; boxes and indices are ``(x, y, z)``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike

from CTSAM3DLib.geometry.model_space import PAD_HU, ModelGrid

# Relative tolerance for deciding that two grids are the same (spacing, origin, direction).
_GRID_RTOL = 1e-4
# Absolute tolerance (mm) on origins when comparing grids.
_ORIGIN_ATOL_MM = 1e-3


class GridMismatchError(ValueError):
    """A label that cannot be placed on its image (not 3-D, or no overlap in world space)."""


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two 3-D images share size, spacing, origin and direction (to rounding).

    Args:
        a: first image.
        b: second image.

    Returns:
        True if voxel ``(i, j, k)`` of ``a`` and of ``b`` are the same point in space for all voxels.
    """
    if a.GetDimension() != b.GetDimension() or a.GetSize() != b.GetSize():
        return False
    spacing_a, spacing_b = np.array(a.GetSpacing()), np.array(b.GetSpacing())
    return bool(
        np.allclose(spacing_a, spacing_b, rtol=_GRID_RTOL, atol=0)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=max(_ORIGIN_ATOL_MM, _GRID_RTOL * spacing_a.min()))
        and np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=_GRID_RTOL)
    )


def check_label_grid(label: sitk.Image, image: sitk.Image) -> str | None:
    """Check that ``label`` can be placed on ``image``'s grid.

    Args:
        label: a label image (any grid).
        image: the CT it belongs to.

    Returns:
        None if both share one grid; otherwise a one-line description of the difference
        (the label will be resampled by physical coordinates).

    Raises:
        GridMismatchError: the label is not 3-D, or its world box does not overlap the image's.
    """
    if label.GetDimension() != 3:
        raise GridMismatchError(f"label is {label.GetDimension()}-D; a 3-D label on the CT's grid is needed")
    if same_grid(label, image):
        return None
    lo_l, hi_l = _world_box(label)
    lo_i, hi_i = _world_box(image)
    overlap = np.minimum(hi_l, hi_i) - np.maximum(lo_l, lo_i)
    if np.any(overlap < 0):
        raise GridMismatchError(
            f"label grid (size {list(label.GetSize())}, spacing {_fmt(label.GetSpacing())}, origin "
            f"{_fmt(label.GetOrigin())}) does not overlap its image (size {list(image.GetSize())}, spacing "
            f"{_fmt(image.GetSpacing())}, origin {_fmt(image.GetOrigin())}) in world space: it cannot belong to it"
        )
    return (f"label grid differs from its image's (label size {list(label.GetSize())} spacing "
            f"{_fmt(label.GetSpacing())} origin {_fmt(label.GetOrigin())}; image size {list(image.GetSize())} "
            f"spacing {_fmt(image.GetSpacing())} origin {_fmt(image.GetOrigin())}); resampled by physical coordinates")


def resample_to_grid(image: sitk.Image, grid: ModelGrid, is_label: bool,
                     region: tuple[ArrayLike, ArrayLike] | None = None) -> np.ndarray:
    """Resample an image (CT or label) onto a model grid, or onto a box of it.

    Args:
        image: 3-D scalar SimpleITK image, any spacing/direction (LPS geometry).
        grid: the target model grid (usually ``ModelGrid.for_image(ct)``; for a label, the grid
            of its CT, not of the label).
        is_label: True for labels (nearest neighbour, outside 0, label pixel type kept);
            False for CT (linear, outside `PAD_HU`, float32).
        region: optional ``(start_xyz, size_xyz)`` integer box of the model grid; default the
            whole grid. The box may extend beyond the grid.

    Returns:
        Array ``(z, y, x)`` of the grid (or box): float32 HU for CT, the label's integer
        dtype for labels (bool labels become uint8).
    """
    if image.GetDimension() != 3:
        raise ValueError(f"Expected a 3-D image, got {image.GetDimension()}-D.")
    if region is None:
        start = np.zeros(3, dtype=np.int64)
        size = np.asarray(grid.shape_xyz, dtype=np.int64)
    else:
        start = np.asarray(region[0], dtype=np.int64).reshape(3)
        size = np.asarray(region[1], dtype=np.int64).reshape(3)
        if np.any(size < 1):
            raise ValueError(f"region size must be positive, got {size.tolist()}.")
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin([float(v) for v in np.asarray(grid.origin_lps) + start * grid.spacing_mm])
    resampler.SetOutputSpacing([grid.spacing_mm] * 3)
    resampler.SetOutputDirection(np.eye(3).ravel().tolist())
    resampler.SetSize([int(v) for v in size])
    if is_label:
        resampler.SetInterpolator(sitk.sitkNearestNeighbor)
        resampler.SetDefaultPixelValue(0)
        if image.GetPixelID() in (sitk.sitkFloat32, sitk.sitkFloat64):
            image = sitk.Cast(sitk.Round(image), sitk.sitkInt32)
        resampler.SetOutputPixelType(image.GetPixelID())
    else:
        resampler.SetInterpolator(sitk.sitkLinear)
        resampler.SetDefaultPixelValue(float(PAD_HU))
        resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def model_box_of_index_box(image: sitk.Image, grid: ModelGrid, low_ijk: ArrayLike, high_ijk: ArrayLike,
                           margin: int = 1) -> tuple[np.ndarray, np.ndarray] | None:
    """The model-grid box covering an index box of ``image`` (e.g. a label's bounding box).

    Args:
        image: the image whose voxel indices are given.
        grid: the model grid.
        low_ijk: first voxel index (i, j, k) of the box, inclusive.
        high_ijk: last voxel index (i, j, k), inclusive.
        margin: extra model voxels on every side.

    Returns:
        ``(start_xyz, size_xyz)`` clipped to the grid, or None if the box misses the grid.
    """
    low = np.asarray(low_ijk, dtype=np.float64) - 0.5
    high = np.asarray(high_ijk, dtype=np.float64) + 0.5
    corners = np.array(np.meshgrid(*zip(low, high), indexing="ij")).reshape(3, -1).T
    lps = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    model = grid.lps_to_model(lps)
    start = np.floor(model.min(axis=0)).astype(np.int64) - margin
    stop = np.ceil(model.max(axis=0)).astype(np.int64) + margin + 1
    start = np.maximum(start, 0)
    stop = np.minimum(stop, np.asarray(grid.shape_xyz, dtype=np.int64))
    if np.any(stop <= start):
        return None
    return start, stop - start


def resample_label_like(label: sitk.Image, reference: sitk.Image) -> np.ndarray:
    """A label resampled by physical coordinates onto another image's grid (nearest, outside 0).

    Returns the label's own array when the grids already agree.

    Args:
        label: label image, any grid.
        reference: the image whose grid receives the label (e.g. its CT, for evaluation).

    Returns:
        Label array ``(z, y, x)`` of ``reference``'s shape.

    Raises:
        GridMismatchError: see `check_label_grid`.
    """
    if check_label_grid(label, reference) is None:
        return sitk.GetArrayFromImage(label)
    out = sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())
    return sitk.GetArrayFromImage(out)


def _world_box(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """World (LPS) box of an image's voxel extents (voxel centres +- half a voxel)."""
    size = np.asarray(image.GetSize(), dtype=np.float64)
    corners = np.array(np.meshgrid(*[[-0.5, n - 0.5] for n in size], indexing="ij")).reshape(3, -1).T
    lps = np.array([image.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners])
    return lps.min(axis=0), lps.max(axis=0)


def _fmt(values: ArrayLike) -> list[float]:
    return [round(float(v), 3) for v in np.asarray(values).ravel()]
