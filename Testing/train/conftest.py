"""Fixtures for the training tests: a tiny variant, synthetic and shared-data datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from _tiny import TINY, TINY_VARIANT

from CTSAM3DLib.model import build



@pytest.fixture()
def tiny_variant(monkeypatch: pytest.MonkeyPatch) -> str:
    """Register the tiny test variant for this test; returns its name."""
    monkeypatch.setitem(build.VARIANTS, TINY, TINY_VARIANT)
    return TINY


def write_synthetic_subject(root: Path, sid: str = "synth", seed: int = 0) -> Path:
    """A TotalSegmentator-layout subject: 96x90x40 CT (1.5 x 1.5 x 3 mm, flipped x/y) with a large
    ellipsoid ``big`` (spans more than one 64^3 patch), a small sphere ``small`` and a box ``box``."""
    rng = np.random.default_rng(seed)
    shape = (40, 90, 96)
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    big = ((xx - 50) * 1.5 / 55) ** 2 + ((yy - 45) * 1.5 / 40) ** 2 + ((zz - 20) * 3.0 / 35) ** 2 < 1
    small = ((xx - 20) * 1.5) ** 2 + ((yy - 20) * 1.5) ** 2 + ((zz - 10) * 3.0) ** 2 < 9.0 ** 2
    box = np.zeros(shape, bool)
    box[28:36, 60:80, 10:25] = True
    ct = np.full(shape, -100.0, np.float32) + rng.normal(0, 15, shape).astype(np.float32)
    ct[big] += 160
    ct[small] = 400 + rng.normal(0, 15, int(small.sum()))
    ct[box] = 800
    folder = root / sid
    (folder / "segmentations").mkdir(parents=True, exist_ok=True)

    def image(a: np.ndarray) -> sitk.Image:
        img = sitk.GetImageFromArray(a)
        img.SetSpacing((1.5, 1.5, 3.0))
        img.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
        img.SetOrigin((100.0, 50.0, -30.0))
        return img

    sitk.WriteImage(image(ct.astype(np.int16)), str(folder / "ct.nii.gz"))
    for name, m in (("big", big), ("small", small), ("box", box)):
        sitk.WriteImage(image(m.astype(np.uint8)), str(folder / "segmentations" / f"{name}.nii.gz"))
    return root


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder with one synthetic TotalSegmentator-layout subject (see `write_synthetic_subject`)."""
    return write_synthetic_subject(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def shared_crop(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A small crop (upper abdomen: liver, right kidney, gallbladder) of the shared abdomen_pelvis CT
    (skips without ../shared, fails under CI=true: see the ``shared_data`` fixture)."""
    src = shared_data / "totalseg-format" / "abdomen_pelvis"
    root = tmp_path_factory.mktemp("crop")
    out = root / "abdomen_pelvis_crop"
    (out / "segmentations").mkdir(parents=True)
    box = ([55, 25, 72], [40, 40, 28])  # index (i, j, k) start and size of the 3 mm CT

    def crop(path: Path) -> sitk.Image:
        return sitk.RegionOfInterest(sitk.ReadImage(str(path)), box[1], box[0])

    sitk.WriteImage(crop(src / "ct.nii.gz"), str(out / "ct.nii.gz"))
    for name in ("liver", "kidney_right", "gallbladder"):
        sitk.WriteImage(crop(src / "segmentations" / f"{name}.nii.gz"), str(out / "segmentations" / f"{name}.nii.gz"))
    return root
