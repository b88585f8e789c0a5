"""Overlap and surface metrics for binary 3-D masks (pure numpy / scipy functions).

Masks are ``(z, y, x)`` arrays (non-zero = foreground); spacing is ``(x, y, z)``
in mm, as everywhere in CTSAM3DLib.

Normalized surface Dice (NSD) here uses a *voxel* surface: the surface of a mask
is the set of its voxels that have at least one 6-neighbour outside it (the mask
minus its binary erosion), and every surface voxel counts once. DeepMind's
``surface-distance`` package instead weights surface elements (surfels) by their
area, so the two agree closely for smooth, well-sampled shapes but differ by a
few percent on thin or strongly anisotropic structures, where voxel counts
over-weight faces along the fine axes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

# 6-connectivity (face neighbours) structuring element used to extract surfaces.
_FACE_NEIGHBOURS = ndimage.generate_binary_structure(3, 1)


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice coefficient ``2 |P & G| / (|P| + |G|)``.

    Args:
        pred: Predicted mask, shape ``(z, y, x)``, non-zero = foreground.
        gt: Ground-truth mask, same shape.

    Returns:
        Dice in [0, 1]; 1.0 when both masks are empty.

    Raises:
        ValueError: If the shapes differ.
    """
    pred, gt = _as_mask_pair(pred, gt)
    total = int(np.count_nonzero(pred)) + int(np.count_nonzero(gt))
    if total == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & gt)) / total


def normalized_surface_dice(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float],
    tolerance_mm: float = 1.0,
) -> float:
    """Normalized surface Dice at a distance tolerance.

    ``NSD = (#pred-surface voxels within tol of the gt surface + #gt-surface
    voxels within tol of the pred surface) / (#pred-surface + #gt-surface)``,
    with distances in mm (Euclidean distance transform with anisotropic
    sampling) and "within" meaning ``<= tolerance_mm``. Surfaces are voxel
    surfaces (see the module docstring); voxels on the array border count as
    surface. Only the union bounding box plus a margin is processed.

    Args:
        pred: Predicted mask, shape ``(z, y, x)``, non-zero = foreground.
        gt: Ground-truth mask, same shape.
        spacing_mm: Voxel size ``(x, y, z)`` in mm.
        tolerance_mm: Distance tolerance in mm, >= 0.

    Returns:
        NSD in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly one is.

    Raises:
        ValueError: If the shapes differ or are not 3-D, the spacing is not
            three positive numbers, or the tolerance is negative.
    """
    pred, gt = _as_mask_pair(pred, gt)
    if pred.ndim != 3:
        raise ValueError(f"masks must be 3-D (z, y, x), got shape {pred.shape}")
    sampling_zyx = _sampling_zyx(spacing_mm)
    if not (math.isfinite(tolerance_mm) and tolerance_mm >= 0):
        raise ValueError(f"tolerance_mm must be a finite number >= 0, got {tolerance_mm!r}")
    has_pred, has_gt = bool(pred.any()), bool(gt.any())
    if not (has_pred or has_gt):
        return 1.0
    if not (has_pred and has_gt):
        return 0.0
    margin = math.ceil(tolerance_mm / min(sampling_zyx)) + 1
    box = _union_box(pred | gt, margin)
    surf_pred, surf_gt = _surface(pred[box]), _surface(gt[box])
    dist_to_gt = ndimage.distance_transform_edt(~surf_gt, sampling=sampling_zyx)
    dist_to_pred = ndimage.distance_transform_edt(~surf_pred, sampling=sampling_zyx)
    close = np.count_nonzero(dist_to_gt[surf_pred] <= tolerance_mm) + np.count_nonzero(
        dist_to_pred[surf_gt] <= tolerance_mm
    )
    return float(close) / float(np.count_nonzero(surf_pred) + np.count_nonzero(surf_gt))


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of a bool ``(z, y, x)`` mask with a 6-neighbour outside it or outside the array."""
    padded = np.pad(mask, 1, mode="constant", constant_values=False)
    eroded = ndimage.binary_erosion(padded, structure=_FACE_NEIGHBOURS)[1:-1, 1:-1, 1:-1]
    return mask & ~eroded


def _union_box(mask: np.ndarray, margin: int) -> tuple[slice, slice, slice]:
    """Bounding box of a non-empty ``(z, y, x)`` mask grown by ``margin`` voxels, clipped."""
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        start = max(int(hits[0]) - margin, 0)
        stop = min(int(hits[-1]) + 1 + margin, mask.shape[axis])
        slices.append(slice(start, stop))
    return (slices[0], slices[1], slices[2])


def _as_mask_pair(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validates two masks of equal shape and returns them as bool arrays."""
    pred, gt = np.asarray(pred), np.asarray(gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    return pred.astype(bool, copy=False), gt.astype(bool, copy=False)


def _sampling_zyx(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    """Validates a spacing ``(x, y, z)`` in mm and returns it in array order ``(z, y, x)``."""
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing_mm must be three positive numbers (x, y, z), got {spacing_mm!r}")
    return (values[2], values[1], values[0])
