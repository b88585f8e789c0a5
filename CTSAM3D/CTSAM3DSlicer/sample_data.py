"""The bundled abdomen CT in Slicer's Sample Data module, loaded from the extension's own files (no download).

Registered like Slicer's built-in samples (``uris``, ``fileNames``, ``nodeNames``, ``checksums``) with a local
``file://`` URI, so it loads from the Sample Data module and from ``SampleData.downloadSample("CTSAM3DSample")``.
"""

from __future__ import annotations

from pathlib import Path

SAMPLE_NAME = "CTSAM3DSample"
SAMPLE_CATEGORY = "CTSAM3D"
# SHA-256 of Resources/sample/abdomen_pelvis/ct.nii.gz (checked by Sample Data on every load).
SAMPLE_SHA256 = "7811475c3e61c4310c51b56998b365ef5d561919388ecb89839f3cf119389e8c"


def sample_source(ct_path: Path, thumbnail_path: Path) -> dict:
    """The keyword arguments of ``SampleDataLogic.registerCustomSampleDataSource`` for the bundled CT."""
    return {"category": SAMPLE_CATEGORY, "sampleName": SAMPLE_NAME, "uris": [ct_path.resolve().as_uri()],
            "fileNames": [f"{SAMPLE_NAME}.nii.gz"], "nodeNames": [SAMPLE_NAME],
            "checksums": [f"SHA256:{SAMPLE_SHA256}"], "thumbnailFileName": str(thumbnail_path)}  # a volume by default


def register_sample_data(thumbnail_path: Path) -> bool:
    """Offer the bundled CT in the Sample Data module; False when the extension was built without it."""
    import SampleData

    from CTSAM3DLib import bundled

    ct_path = bundled.sample_dir() / "ct.nii.gz"
    if not ct_path.is_file():
        return False
    SampleData.SampleDataLogic.registerCustomSampleDataSource(**sample_source(ct_path, thumbnail_path))
    return True
