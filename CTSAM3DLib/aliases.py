"""Type aliases shared across the library."""

from __future__ import annotations

# Integer voxel index (x, y, z) = (i, j, k).
IJK = tuple[int, int, int]
# Axis-aligned box in voxel indices: (low (x, y, z) inclusive, high (x, y, z) exclusive).
BBox3D = tuple[IJK, IJK]
