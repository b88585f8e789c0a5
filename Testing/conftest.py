"""Shared fixtures: a small random compact model and a synthetic CT with a sphere."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CTSAM3DLib import Predictor, build_model

# Shared folder (read-only), next to the repository: data and docs.
SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SHARED_DATA = SHARED / "data"


def _shared(name: str) -> Path:
    """``../shared/<name>`` beside the checkout; when it is missing the test skips, except under
    ``CI=true``, where it fails: CI must run every test that reads the shared folder."""
    folder = SHARED / name
    if not folder.is_dir():
        message = f"shared folder {folder} (../shared/{name} beside the checkout) is missing"
        if os.environ.get("CI", "").strip().lower() == "true":
            pytest.fail(message + " under CI=true", pytrace=False)
        pytest.skip(message)
    return folder


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared data folder, ``../shared/data`` (see `_shared`)."""
    return _shared("data")


@pytest.fixture(scope="session")
def shared_docs() -> Path:
    """The shared docs folder, ``../shared/docs``: the release's facts (see `_shared`)."""
    return _shared("docs")


@pytest.fixture(scope="session")
def repo_script() -> Callable[[str], ModuleType]:
    """A loader of the repository's ``scripts/<name>.py`` as a module, to call its ``main``."""
    def load(name: str) -> ModuleType:
        path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)  # type: ignore[union-attr]
        return module
    return load


@pytest.fixture(scope="session")
def random_predictor() -> Predictor:
    """A seeded, randomly initialised compact model on CPU."""
    torch.manual_seed(0)
    return Predictor(build_model("compact"), "compact", (-1000.0, 1000.0))


@pytest.fixture()
def sphere_image() -> tuple[sitk.Image, np.ndarray]:
    """A 90x80x40 CT (2 x 2 x 3.5 mm, oblique) with a bright sphere; returns (image, mask zyx)."""
    rng = np.random.default_rng(0)
    shape = (40, 80, 90)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    mask = ((xx - 45) * 2.0) ** 2 + ((yy - 40) * 2.0) ** 2 + ((zz - 20) * 3.5) ** 2 < 30.0 ** 2
    arr = np.where(mask, 150.0, -50.0) + rng.normal(0, 10, shape)
    img = sitk.GetImageFromArray(arr.astype(np.int16))
    img.SetSpacing((2.0, 2.0, 3.5))
    c, s = np.cos(0.3), np.sin(0.3)
    img.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    img.SetOrigin((10.0, -20.0, 5.0))
    return img, mask.astype(np.uint8)
