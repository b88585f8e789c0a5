"""Bundled resources: the default weights (with their recorded SHA-256) and the sample CT.

In a pip install they live in the ``CTSAM3DLib.resources`` package (mapped from the
repository's top-level ``Resources/`` folder); in a source checkout or inside the Slicer
extension they are found next to the package, in ``Resources/``.
"""

from __future__ import annotations

from pathlib import Path

# File name of the bundled default weights, under Resources/weights/.
DEFAULT_WEIGHTS_NAME = "ctsam3d_compact.pt"
# SHA-256 of the bundled default weights, checked at every load (see docs/MODEL_CARD.md).
DEFAULT_WEIGHTS_SHA256 = "f5f372b6818d7a3c795d163a98ed4e36c2ea69cbf2744e5149277367552a485e"


def resources_dir() -> Path:
    """The folder holding ``weights/`` and ``sample/``."""
    try:
        from importlib.resources import files

        packaged = Path(str(files("CTSAM3DLib.resources")))
        if (packaged / "weights").is_dir():
            return packaged
    except (ModuleNotFoundError, TypeError):
        pass
    return Path(__file__).resolve().parents[1] / "Resources"


def default_weights_path() -> Path:
    """Path of the bundled default weights."""
    return resources_dir() / "weights" / DEFAULT_WEIGHTS_NAME


def sample_dir() -> Path:
    """Folder of the bundled sample case (TotalSegmentator layout: ct.nii.gz, segmentations/)."""
    return resources_dir() / "sample" / "abdomen_pelvis"
