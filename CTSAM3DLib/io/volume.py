"""The `Volume` container: a voxel array plus its exact world geometry.

Conventions (used everywhere in CTSAM3DLib):

* ``array`` is indexed ``(z, y, x)`` = ``(k, j, i)``, as SimpleITK's
  ``GetArrayFromImage`` and Slicer's ``arrayFromVolume`` return it.
* Points and per-axis vectors (``spacing_mm``, ``origin_lps``, ``shape_xyz``)
  are ``(x, y, z)`` = ``(i, j, k)``.
* The world frame is ITK's LPS in millimetres. Slicer's RAS is
  ``diag(-1, -1, 1) @ LPS``.

The voxel with index ``(i, j, k)`` has its centre at
``origin_lps + direction @ (spacing_mm * (i, j, k))``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Converts LPS to RAS and back (it is its own inverse).
LPS_TO_RAS_3X3 = np.diag([-1.0, -1.0, 1.0])


def _frozen_vector(value: object, name: str) -> np.ndarray:
    vector = np.array(value, dtype=np.float64)
    if vector.shape != (3,):
        raise ValueError(f"Volume.{name} must have 3 values (x, y, z), got shape {vector.shape}.")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"Volume.{name} must be finite, got {vector.tolist()}.")
    vector.setflags(write=False)
    return vector


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3-D scalar image with its world geometry (LPS, mm).

    Attributes:
        array: voxel values, shape ``(z, y, x)``, any numeric dtype. Not copied:
            the Volume shares memory with the array it was given.
        spacing_mm: voxel size along i, j, k in mm, shape ``(3,)`` float64.
        origin_lps: world position (LPS, mm) of the centre of voxel (0, 0, 0),
            shape ``(3,)`` float64.
        direction: ``(3, 3)`` float64; column ``n`` is the unit vector of index
            axis ``n`` (i, j, k) in LPS. Defaults to the identity.
    """

    array: np.ndarray
    spacing_mm: np.ndarray
    origin_lps: np.ndarray
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim != 3:
            raise ValueError(f"Volume.array must be 3-D (z, y, x), got shape {array.shape}.")
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise ValueError(f"Volume.array must be numeric, got dtype {array.dtype}.")
        spacing = _frozen_vector(self.spacing_mm, "spacing_mm")
        if np.any(spacing <= 0):
            raise ValueError(f"Volume.spacing_mm must be positive, got {spacing.tolist()}.")
        direction = np.array(self.direction, dtype=np.float64)
        if direction.shape != (3, 3) or not np.all(np.isfinite(direction)):
            raise ValueError(f"Volume.direction must be a finite 3x3 matrix, got shape {direction.shape}.")
        if abs(np.linalg.det(direction)) < 1e-6:
            raise ValueError(f"Volume.direction is singular: {direction.tolist()}.")
        direction.setflags(write=False)
        object.__setattr__(self, "array", array)
        object.__setattr__(self, "spacing_mm", spacing)
        object.__setattr__(self, "origin_lps", _frozen_vector(self.origin_lps, "origin_lps"))
        object.__setattr__(self, "direction", direction)

    @property
    def shape_xyz(self) -> tuple[int, int, int]:
        """Number of voxels along (i, j, k) = (x, y, z)."""
        k, j, i = self.array.shape
        return (int(i), int(j), int(k))

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 float64 matrix mapping homogeneous (i, j, k, 1) to (L, P, S, 1) mm."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction @ np.diag(self.spacing_mm)
        matrix[:3, 3] = self.origin_lps
        return matrix

    @property
    def ijk_to_ras(self) -> np.ndarray:
        """4x4 float64 matrix mapping (i, j, k, 1) to (R, A, S, 1) mm (Slicer's IJKToRAS)."""
        matrix = self.ijk_to_lps
        matrix[:3, :] = LPS_TO_RAS_3X3 @ matrix[:3, :]
        return matrix

    @classmethod
    def from_ijk_to_ras(cls, array: np.ndarray, ijk_to_ras: np.ndarray) -> Volume:
        """Build a Volume from an array and Slicer's IJK-to-RAS matrix.

        Args:
            array: voxel values, shape ``(z, y, x)`` (as ``slicer.util.arrayFromVolume``).
            ijk_to_ras: 4x4 matrix mapping (i, j, k, 1) to (R, A, S, 1) in mm,
                as ``vtkMRMLScalarVolumeNode.GetIJKToRASMatrix`` gives it.

        Returns:
            The Volume; spacing = column norms of the 3x3 part, direction = the
            normalised columns converted to LPS, origin converted to LPS.

        Raises:
            ValueError: if the matrix is not a 4x4 affine with non-zero columns.
        """
        matrix = np.asarray(ijk_to_ras, dtype=np.float64)
        if matrix.shape != (4, 4) or not np.allclose(matrix[3], [0.0, 0.0, 0.0, 1.0]):
            raise ValueError(f"ijk_to_ras must be a 4x4 affine matrix, got {matrix.tolist()}.")
        linear_ras = matrix[:3, :3]
        spacing = np.linalg.norm(linear_ras, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"ijk_to_ras has a zero column (zero spacing): {matrix.tolist()}.")
        direction_lps = LPS_TO_RAS_3X3 @ (linear_ras / spacing)
        origin_lps = LPS_TO_RAS_3X3 @ matrix[:3, 3]
        return cls(array=array, spacing_mm=spacing, origin_lps=origin_lps, direction=direction_lps)
