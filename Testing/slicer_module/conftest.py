"""Fixtures for the Slicer-side tests: real MRML through the slicer-core wheel (a test dependency).

Without slicer-core the MRML tests skip; the module-import test still runs.
"""

from __future__ import annotations

import numpy as np
import pytest
from mrml_test_support import (
    StubPredictor,
    affine,
    headless_scene,
    make_segmentation_node,
    make_volume_node,
    synthetic_ct,
)


def _quiet_vtk() -> None:
    import vtk

    vtk.vtkLogger.SetStderrVerbosity(vtk.vtkLogger.VERBOSITY_ERROR)
    vtk.vtkObject.GlobalWarningDisplayOff()  # colour-file warnings of the app-less colour logic


@pytest.fixture
def scene():
    """A fresh scene with the Volumes / Segmentations / Markups logics registered."""
    pytest.importorskip("slicer_core", reason="needs the slicer-core wheel (pip install 'CTSAM3DLib[test]')")
    _quiet_vtk()
    mrml_scene = headless_scene()
    yield mrml_scene
    mrml_scene.Clear(True)


@pytest.fixture
def stub_predictor() -> StubPredictor:
    return StubPredictor()


@pytest.fixture
def volume_node(scene):
    """A 56 x 48 x 40 (x, y, z) CT with an oblique, anisotropic IJKToRAS."""
    from mrml_test_support import rotation

    linear = rotation((1.0, 1.0, 0.3), 25.0) @ np.diag([0.9, 1.1, 2.0])
    return make_volume_node(scene, synthetic_ct((40, 48, 56)), affine(linear, (-20.0, 15.0, 40.0)))


@pytest.fixture
def segmentation_node(scene):
    return make_segmentation_node(scene)
