"""io layer of CTSAM3DLib: the Volume container, image/mask files, point files."""

from CTSAM3DLib.io.points import FRAMES, PointSpec, parse_point_arg, points_to_ijk, read_points_file
from CTSAM3DLib.io.readers import (
    ImageReadError,
    read_image,
    read_volume,
    sitk_geometry_matrix,
    sitk_to_volume,
    volume_to_sitk,
    write_mask,
)
from CTSAM3DLib.io.volume import Volume

__all__ = [
    "FRAMES",
    "ImageReadError",
    "PointSpec",
    "Volume",
    "parse_point_arg",
    "points_to_ijk",
    "read_image",
    "read_points_file",
    "read_volume",
    "sitk_geometry_matrix",
    "sitk_to_volume",
    "volume_to_sitk",
    "write_mask",
]
