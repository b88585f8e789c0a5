"""A single user (or simulated) click on a 3-D volume."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Click:
    """One click prompt.

    Attributes:
        point_xyz: Voxel coordinates ``(x, y, z)`` = ``(i, j, k)`` in the frame of
            the array the click refers to (that array is indexed ``(z, y, x)``).
            Floats, so that sub-voxel clicks (e.g. mapped from RAS) are allowed.
        is_positive: True for a foreground (include) click, False for a
            background (exclude) click.
    """

    point_xyz: tuple[float, float, float]
    is_positive: bool
