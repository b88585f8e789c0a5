"""geometry layer of CTSAM3DLib: frame conversions and model space."""

from CTSAM3DLib.geometry.affine import ijk_to_lps, ijk_to_ras, lps_to_ijk, lps_to_ras, ras_to_ijk, ras_to_lps
from CTSAM3DLib.geometry.model_space import (
    MODEL_SPACING_MM,
    PAD_HU,
    PATCH_SIZE,
    ModelGrid,
    extract_patch,
    extract_patches,
    resample_to_input,
)

__all__ = [
    "MODEL_SPACING_MM",
    "PAD_HU",
    "PATCH_SIZE",
    "ModelGrid",
    "extract_patch",
    "extract_patches",
    "ijk_to_lps",
    "ijk_to_ras",
    "lps_to_ijk",
    "lps_to_ras",
    "ras_to_ijk",
    "ras_to_lps",
    "resample_to_input",
]
