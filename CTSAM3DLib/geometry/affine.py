"""Conversions between voxel indices (IJK), LPS and RAS world coordinates.

Pure numpy, vectorised: every function takes points as an ``(N, 3)`` array
(or one ``(3,)`` point) in ``(x, y, z)`` order and returns float64 of the same
shape. Indices are continuous: ``(i, j, k) = (2.0, 3.0, 4.0)`` is the centre of
voxel ``array[4, 3, 2]`` (arrays are ``(z, y, x)``). World coordinates are mm.

The geometry argument is either a `CTSAM3DLib.io.Volume` or its 4x4
``ijk_to_lps`` matrix. Oblique, flipped and anisotropic grids are exact: the
inverse mapping solves the full 4x4 system.

RAS (Slicer) = ``diag(-1, -1, 1) @ LPS`` (ITK, DICOM, this library).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Union

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from CTSAM3DLib.io.volume import Volume

# Either a Volume or its 4x4 ijk -> LPS matrix.
GeometryLike = Union["Volume", np.ndarray]

# Sign flip taking LPS to RAS and back, applied per (x, y, z) component.
_FLIP_XY = np.array([-1.0, -1.0, 1.0])


def _as_points(points: ArrayLike) -> tuple[np.ndarray, bool]:
    array = np.asarray(points, dtype=np.float64)
    is_single = array.ndim == 1
    array = np.atleast_2d(array)
    if array.ndim != 2 or array.shape[1] != 3:
        raise ValueError(f"Points must have shape (N, 3) or (3,) in (x, y, z) order, got {np.shape(points)}.")
    return array, is_single


def _restore(array: np.ndarray, is_single: bool) -> np.ndarray:
    return array[0] if is_single else array


def _matrix(geometry: GeometryLike) -> np.ndarray:
    matrix = getattr(geometry, "ijk_to_lps", geometry)
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape != (4, 4):
        raise ValueError(f"Expected a Volume or a 4x4 ijk_to_lps matrix, got shape {matrix.shape}.")
    return matrix


def _apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def ras_to_lps(points_ras: ArrayLike) -> np.ndarray:
    """RAS (Slicer) to LPS (ITK) world coordinates.

    Args:
        points_ras: ``(N, 3)`` or ``(3,)`` points in RAS mm.

    Returns:
        Same shape, LPS mm, float64.
    """
    points, is_single = _as_points(points_ras)
    return _restore(points * _FLIP_XY, is_single)


def lps_to_ras(points_lps: ArrayLike) -> np.ndarray:
    """LPS (ITK) to RAS (Slicer) world coordinates.

    Args:
        points_lps: ``(N, 3)`` or ``(3,)`` points in LPS mm.

    Returns:
        Same shape, RAS mm, float64.
    """
    points, is_single = _as_points(points_lps)
    return _restore(points * _FLIP_XY, is_single)


def ijk_to_lps(geometry: GeometryLike, points_ijk: ArrayLike) -> np.ndarray:
    """Continuous voxel indices to LPS world coordinates.

    Args:
        geometry: a Volume or its 4x4 ijk_to_lps matrix.
        points_ijk: ``(N, 3)`` or ``(3,)`` indices ``(i, j, k)`` = ``(x, y, z)``.

    Returns:
        Same shape, LPS mm, float64.
    """
    points, is_single = _as_points(points_ijk)
    return _restore(_apply(_matrix(geometry), points), is_single)


def lps_to_ijk(geometry: GeometryLike, points_lps: ArrayLike) -> np.ndarray:
    """LPS world coordinates to continuous voxel indices (not rounded).

    Args:
        geometry: a Volume or its 4x4 ijk_to_lps matrix.
        points_lps: ``(N, 3)`` or ``(3,)`` points in LPS mm.

    Returns:
        Same shape, float64 indices ``(i, j, k)``; round them to get the voxel
        whose centre is nearest.
    """
    points, is_single = _as_points(points_lps)
    homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
    solved = np.linalg.solve(_matrix(geometry), homogeneous.T).T
    return _restore(solved[:, :3], is_single)


def ras_to_ijk(geometry: GeometryLike, points_ras: ArrayLike) -> np.ndarray:
    """RAS world coordinates to continuous voxel indices.

    Args:
        geometry: a Volume or its 4x4 ijk_to_lps matrix (LPS, not RAS).
        points_ras: ``(N, 3)`` or ``(3,)`` points in RAS mm.

    Returns:
        Same shape, float64 indices ``(i, j, k)``.
    """
    return lps_to_ijk(geometry, ras_to_lps(points_ras))


def ijk_to_ras(geometry: GeometryLike, points_ijk: ArrayLike) -> np.ndarray:
    """Continuous voxel indices to RAS world coordinates.

    Args:
        geometry: a Volume or its 4x4 ijk_to_lps matrix (LPS, not RAS).
        points_ijk: ``(N, 3)`` or ``(3,)`` indices ``(i, j, k)``.

    Returns:
        Same shape, RAS mm, float64.
    """
    return lps_to_ras(ijk_to_lps(geometry, points_ijk))
