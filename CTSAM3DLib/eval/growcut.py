"""Baseline: 3D Slicer's "Grow from seeds" (fast GrowCut) driven by clicks.

Runs Slicer's own ``vtkImageGrowCutSegment`` filter from the ``slicer-core``
package, so the baseline is the algorithm behind the Segment Editor effect, not
a re-implementation. ``slicer-core`` is optional: it is imported lazily, and a
missing package raises an ``ImportError`` that says how to install it.

Arrays are ``(z, y, x)``; clicks are voxel ``(x, y, z)``; spacing is ``(x, y, z)``
in mm, as everywhere in CTSAM3DLib.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from CTSAM3DLib.prompts.click import Click

logger = logging.getLogger(__name__)

# Radius in mm of the ball of seed voxels painted at each click (always >= the click voxel).
SEED_RADIUS_MM = 2.0
# Extra ROI margin per side, as a fraction of the largest extent (mm) of the positive clicks.
ROI_SPREAD_RATIO = 0.5
# Seed label of the structure; GrowCut output label of the structure.
FOREGROUND_LABEL = 1
# Seed label of everything else (negative clicks and the ROI shell).
BACKGROUND_LABEL = 2
# Modules that may expose vtkImageGrowCutSegment: the slicer-core wheel, then a Slicer application.
_GROWCUT_MODULES = (
    "slicer_core.vtkSlicerSegmentationsModuleLogic",
    "vtkSlicerSegmentationsModuleLogicPython",
    "slicer",
)
_MISSING_MESSAGE = (
    "The Grow-from-seeds baseline needs slicer-core: pip install 'CTSAM3DLib[growcut]'"
)

_Box = tuple[slice, slice, slice]


def grow_from_seeds(
    image_zyx: np.ndarray,
    spacing_mm: Sequence[float],
    clicks: Sequence[Click],
    roi_margin_mm: float = 20.0,
) -> np.ndarray:
    """Segments the clicked structure with Slicer's "Grow from seeds".

    Seeds, in the voxel frame of ``image_zyx``:

    * every click paints a ball of radius :data:`SEED_RADIUS_MM` (anisotropic in
      voxels, at least the click voxel): label 1 for positive clicks, label 2
      for negative ones, in click order, so a later click overrides an earlier
      one where their balls overlap;
    * GrowCut labels every voxel with the label of some seed, so the structure
      needs background seeds around it. They are the 1-voxel-thick shell of an
      ROI box: the bounding box of the *positive* clicks grown on each side by
      ``roi_margin_mm + ROI_SPREAD_RATIO * (largest extent of the positive
      clicks in mm)``, clipped to the image (where it is clipped, the image
      border is the shell). Negative clicks do not enlarge the ROI: they say
      where the structure is not, and outside the ROI is background anyway;
      negative clicks outside the ROI are ignored.

    GrowCut runs only on the ROI crop (as the Segment Editor does with its
    masking ROI) on raw intensities, with the default seed locality (distance
    penalty 0, so the path cost is the summed absolute intensity difference;
    the physical spacing is set on the images and would scale a non-zero
    penalty in mm). The result is pasted back into an all-background mask.
    Without positive clicks the mask is empty. With one click the ROI is a
    ``2 * roi_margin_mm`` cube, which cuts structures larger than that; later
    positive clicks widen it through the spread term.

    Args:
        image_zyx: Intensity volume (HU, any real dtype), shape ``(z, y, x)``.
        spacing_mm: Voxel size ``(x, y, z)`` in mm.
        clicks: Clicks with voxel ``(x, y, z)`` coordinates in ``image_zyx``
            (rounded to the nearest voxel).
        roi_margin_mm: Fixed part of the ROI margin in mm, >= 0.

    Returns:
        Bool mask, shape ``(z, y, x)`` like ``image_zyx``; True = structure.

    Raises:
        ValueError: If the image is not 3-D, the spacing or margin is invalid,
            or a click lies outside the image.
        ImportError: If slicer-core is not installed.
        RuntimeError: If the GrowCut filter fails.
    """
    image_zyx, sampling_zyx = _validate(image_zyx, spacing_mm, roi_margin_mm)
    clicks_zyx = [(_click_voxel_zyx(c, image_zyx.shape), c.is_positive) for c in clicks]
    mask = np.zeros(image_zyx.shape, dtype=bool)
    if not any(is_positive for _, is_positive in clicks_zyx):
        logger.info("grow_from_seeds: no positive click, returning an empty mask")
        return mask
    box = _roi_box(image_zyx.shape, sampling_zyx, clicks_zyx, roi_margin_mm)
    seeds = _seed_labels(box, sampling_zyx, clicks_zyx)
    start = time.perf_counter()
    labels = _run_growcut(image_zyx[box], seeds, sampling_zyx)
    elapsed_s = time.perf_counter() - start
    logger.info("GrowCut on a %s (z, y, x) ROI took %.2f s", seeds.shape, elapsed_s)
    mask[box] = labels == FOREGROUND_LABEL
    return mask


def _roi_box(
    shape_zyx: tuple[int, ...],
    sampling_zyx: tuple[float, float, float],
    clicks_zyx: Sequence[tuple[tuple[int, int, int], bool]],
    roi_margin_mm: float,
) -> _Box:
    """ROI box around the positive clicks (see :func:`grow_from_seeds`).

    Args:
        shape_zyx: Image shape ``(z, y, x)``.
        sampling_zyx: Voxel size in mm in array order ``(z, y, x)``.
        clicks_zyx: ``((z, y, x) voxel, is_positive)`` pairs; at least one positive.
        roi_margin_mm: Fixed part of the margin in mm.

    Returns:
        One ``slice`` per axis ``(z, y, x)``, clipped to the image.
    """
    points = np.array([p for p, is_positive in clicks_zyx if is_positive], dtype=np.int64)
    low, high = points.min(axis=0), points.max(axis=0)
    spread_mm = float(np.max((high - low) * np.asarray(sampling_zyx)))
    margin_mm = roi_margin_mm + ROI_SPREAD_RATIO * spread_mm
    slices = []
    for axis in range(3):
        margin_vox = math.ceil(margin_mm / sampling_zyx[axis])
        start = max(int(low[axis]) - margin_vox, 0)
        stop = min(int(high[axis]) + margin_vox + 1, shape_zyx[axis])
        slices.append(slice(start, stop))
    return (slices[0], slices[1], slices[2])


def _seed_labels(
    box: _Box,
    sampling_zyx: tuple[float, float, float],
    clicks_zyx: Sequence[tuple[tuple[int, int, int], bool]],
) -> np.ndarray:
    """Seed label map of the ROI crop: shell and negative balls = 2, positive balls = 1.

    Args:
        box: ROI box in the image, one slice per axis ``(z, y, x)``.
        sampling_zyx: Voxel size in mm in array order ``(z, y, x)``.
        clicks_zyx: ``((z, y, x) voxel in the image, is_positive)`` pairs.

    Returns:
        uint8 array of the ROI crop's shape ``(z, y, x)``; 0 = unlabelled.
    """
    shape = tuple(s.stop - s.start for s in box)
    seeds = np.full(shape, BACKGROUND_LABEL, dtype=np.uint8)
    seeds[1:-1, 1:-1, 1:-1] = 0
    offsets = _ball_offsets(sampling_zyx, SEED_RADIUS_MM)
    for point, is_positive in clicks_zyx:
        voxels = offsets + np.array([p - s.start for p, s in zip(point, box)])
        inside = np.all((voxels >= 0) & (voxels < np.array(shape)), axis=1)
        voxels = voxels[inside]
        if voxels.size:
            label = FOREGROUND_LABEL if is_positive else BACKGROUND_LABEL
            seeds[voxels[:, 0], voxels[:, 1], voxels[:, 2]] = label
    return seeds


def _ball_offsets(sampling_zyx: tuple[float, float, float], radius_mm: float) -> np.ndarray:
    """Integer ``(z, y, x)`` offsets of voxels within ``radius_mm`` of a centre, shape (n, 3)."""
    half = [int(radius_mm // s) for s in sampling_zyx]
    grids = np.meshgrid(*[np.arange(-h, h + 1) for h in half], indexing="ij")
    offsets = np.stack([g.ravel() for g in grids], axis=1)
    dist2 = ((offsets * np.asarray(sampling_zyx)) ** 2).sum(axis=1)
    return offsets[dist2 <= radius_mm**2]


def _run_growcut(
    intensity_zyx: np.ndarray, seeds_zyx: np.ndarray, sampling_zyx: tuple[float, float, float]
) -> np.ndarray:
    """Runs vtkImageGrowCutSegment on a crop and returns its label map (z, y, x).

    The filter never propagates from the outermost voxel layer of its input, so
    the crop is padded by one voxel (edge intensities, no seeds) and the pad is
    removed from the result.
    """
    from vtkmodules.util.numpy_support import vtk_to_numpy

    growcut = _growcut_filter_class()()
    intensity = np.pad(intensity_zyx.astype(np.float32), 1, mode="edge")
    seeds = np.pad(seeds_zyx, 1, mode="constant", constant_values=0)
    growcut.SetIntensityVolume(_to_vtk_image(intensity, sampling_zyx))
    growcut.SetSeedLabelVolume(_to_vtk_image(seeds, sampling_zyx))
    growcut.SetDistancePenalty(0.0)
    growcut.Update()
    output = growcut.GetOutput()
    scalars = output.GetPointData().GetScalars() if output is not None else None
    if scalars is None or tuple(output.GetDimensions()) != seeds.shape[::-1]:
        raise RuntimeError("vtkImageGrowCutSegment failed (see the VTK warning output)")
    labels = vtk_to_numpy(scalars).reshape(seeds.shape).copy()
    return labels[1:-1, 1:-1, 1:-1]


def _to_vtk_image(array_zyx: np.ndarray, sampling_zyx: tuple[float, float, float]) -> Any:
    """Deep-copies a ``(z, y, x)`` array into a vtkImageData (spacing (x, y, z), origin 0)."""
    from vtkmodules.util.numpy_support import numpy_to_vtk
    from vtkmodules.vtkCommonDataModel import vtkImageData

    image = vtkImageData()
    image.SetDimensions(*array_zyx.shape[::-1])
    image.SetSpacing(*sampling_zyx[::-1])
    image.SetOrigin(0.0, 0.0, 0.0)
    flat = np.ascontiguousarray(array_zyx).ravel()  # C order of (z, y, x) = VTK's x-fastest order
    image.GetPointData().SetScalars(numpy_to_vtk(flat, deep=True))
    return image


def _growcut_filter_class() -> Any:
    """Returns the vtkImageGrowCutSegment class from slicer-core (or a running Slicer)."""
    for module_name in _GROWCUT_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        growcut_class = getattr(module, "vtkImageGrowCutSegment", None)
        if growcut_class is not None:
            return growcut_class
    raise ImportError(_MISSING_MESSAGE)


def _click_voxel_zyx(click: Click, shape_zyx: tuple[int, ...]) -> tuple[int, int, int]:
    """Rounds a click's voxel ``(x, y, z)`` to an in-image ``(z, y, x)`` index."""
    x, y, z = (int(round(float(c))) for c in click.point_xyz)
    if not all(0 <= i < n for i, n in zip((z, y, x), shape_zyx)):
        raise ValueError(
            f"click {click.point_xyz} (x, y, z) is outside the image of (z, y, x) shape {shape_zyx}"
        )
    return (z, y, x)


def _validate(
    image_zyx: np.ndarray, spacing_mm: Sequence[float], roi_margin_mm: float
) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Checks the inputs; returns the image as an array and the spacing in (z, y, x) order."""
    image_zyx = np.asarray(image_zyx)
    if image_zyx.ndim != 3 or min(image_zyx.shape) < 1:
        raise ValueError(
            f"image_zyx must be a non-empty 3-D (z, y, x) array, got shape {image_zyx.shape}"
        )
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing_mm must be three positive numbers (x, y, z), got {spacing_mm!r}")
    if not (math.isfinite(roi_margin_mm) and roi_margin_mm >= 0):
        raise ValueError(f"roi_margin_mm must be a finite number >= 0, got {roi_margin_mm!r}")
    return image_zyx, (values[2], values[1], values[0])
