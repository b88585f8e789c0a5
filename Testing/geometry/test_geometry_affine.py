"""Tests for CTSAM3DLib.geometry.affine: exact frame conversions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from CTSAM3DLib.geometry import affine
from CTSAM3DLib.io import Volume, volume_to_sitk

RNG = np.random.default_rng(0)


def _volume(direction: np.ndarray, spacing: tuple[float, float, float]) -> Volume:
    return Volume(np.zeros((5, 6, 7), np.int16), np.array(spacing), np.array([12.5, -40.0, 7.25]), direction)


OBLIQUE = Rotation.from_euler("xyz", [20, -35, 50], degrees=True).as_matrix()
FLIPPED = np.diag([-1.0, 1.0, -1.0])
GEOMETRIES = {
    "identity-anisotropic": _volume(np.eye(3), (0.7, 0.9, 3.0)),
    "oblique-anisotropic": _volume(OBLIQUE, (0.8, 1.3, 2.5)),
    "flipped": _volume(FLIPPED, (1.0, 1.0, 2.0)),
    "oblique-flipped-permuted": _volume(OBLIQUE @ np.array([[0, 1, 0], [-1, 0, 0], [0, 0, 1.0]]), (0.5, 2.0, 1.2)),
}


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_ijk_lps_ras_round_trips(name: str) -> None:
    volume = GEOMETRIES[name]
    points_ijk = RNG.uniform(-3, 10, size=(50, 3))
    points_lps = affine.ijk_to_lps(volume, points_ijk)
    np.testing.assert_allclose(affine.lps_to_ijk(volume, points_lps), points_ijk, atol=1e-10)
    points_ras = affine.ijk_to_ras(volume, points_ijk)
    np.testing.assert_allclose(points_ras, affine.lps_to_ras(points_lps), atol=1e-12)
    np.testing.assert_allclose(affine.ras_to_ijk(volume, points_ras), points_ijk, atol=1e-10)
    np.testing.assert_allclose(affine.ras_to_lps(points_ras), points_lps, atol=1e-12)


@pytest.mark.parametrize("name", list(GEOMETRIES))
def test_ijk_to_lps_matches_simpleitk(name: str) -> None:
    volume = GEOMETRIES[name]
    image = volume_to_sitk(volume)
    points_ijk = RNG.uniform(0, 5, size=(10, 3))
    expected = np.array([image.TransformContinuousIndexToPhysicalPoint(p.tolist()) for p in points_ijk])
    np.testing.assert_allclose(affine.ijk_to_lps(volume, points_ijk), expected, atol=1e-9)
    np.testing.assert_allclose(affine.ijk_to_lps(volume.ijk_to_lps, points_ijk), expected, atol=1e-9)


def test_voxel_centre_convention() -> None:
    volume = GEOMETRIES["identity-anisotropic"]
    np.testing.assert_allclose(affine.ijk_to_lps(volume, [0, 0, 0]), volume.origin_lps)
    np.testing.assert_allclose(affine.ijk_to_lps(volume, [1, 2, 3]), volume.origin_lps + np.array([0.7, 1.8, 9.0]))


def test_ras_lps_flip_and_shapes() -> None:
    np.testing.assert_array_equal(affine.ras_to_lps([1.0, 2.0, 3.0]), [-1.0, -2.0, 3.0])
    assert affine.lps_to_ras(np.zeros((4, 3))).shape == (4, 3)
    assert affine.lps_to_ijk(GEOMETRIES["flipped"], [1.0, 2.0, 3.0]).shape == (3,)
    assert affine.ijk_to_lps(GEOMETRIES["flipped"], np.zeros((0, 3))).shape == (0, 3)


def test_bad_inputs_raise() -> None:
    with pytest.raises(ValueError, match="shape"):
        affine.ijk_to_lps(GEOMETRIES["flipped"], np.zeros((4, 2)))
    with pytest.raises(ValueError, match="4x4"):
        affine.ijk_to_lps(np.eye(3), [0, 0, 0])


def test_sitk_agrees_on_inverse() -> None:
    volume = GEOMETRIES["oblique-flipped-permuted"]
    image = volume_to_sitk(volume)
    point_lps = [3.0, -20.0, 11.0]
    expected = image.TransformPhysicalPointToContinuousIndex(point_lps)
    np.testing.assert_allclose(affine.lps_to_ijk(volume, point_lps), expected, atol=1e-9)
