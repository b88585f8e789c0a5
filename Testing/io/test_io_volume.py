"""Tests for CTSAM3DLib.io.volume.Volume."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from CTSAM3DLib.io import Volume, sitk_geometry_matrix, sitk_to_volume, volume_to_sitk


def _oblique_image() -> sitk.Image:
    direction = Rotation.from_euler("xyz", [10, 30, -70], degrees=True).as_matrix() @ np.diag([1.0, 1.0, -1.0])
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    image.SetSpacing([0.6, 0.9, 2.5])
    image.SetOrigin([101.0, -33.5, 12.0])
    image.SetDirection(direction.ravel().tolist())
    return image


def test_from_ijk_to_ras_matches_simpleitk_geometry() -> None:
    image = _oblique_image()
    volume = sitk_to_volume(image)
    rebuilt = Volume.from_ijk_to_ras(volume.array, volume.ijk_to_ras)
    np.testing.assert_allclose(rebuilt.spacing_mm, image.GetSpacing(), atol=1e-12)
    np.testing.assert_allclose(rebuilt.origin_lps, image.GetOrigin(), atol=1e-12)
    np.testing.assert_allclose(rebuilt.direction.ravel(), image.GetDirection(), atol=1e-12)
    point = image.TransformContinuousIndexToPhysicalPoint([1.5, 2.0, 3.25])
    ras = volume.ijk_to_ras @ [1.5, 2.0, 3.25, 1.0]
    np.testing.assert_allclose(ras[:3], np.array(point) * [-1, -1, 1], atol=1e-12)


def test_from_ijk_to_ras_hand_made_matrix() -> None:
    ijk_to_ras = np.array([[-0.5, 0, 0, 10.0], [0, -0.75, 0, 20.0], [0, 0, 2.0, -30.0], [0, 0, 0, 1]])
    volume = Volume.from_ijk_to_ras(np.zeros((2, 3, 4), np.uint8), ijk_to_ras)
    np.testing.assert_allclose(volume.spacing_mm, [0.5, 0.75, 2.0])
    np.testing.assert_allclose(volume.direction, np.eye(3))
    np.testing.assert_allclose(volume.origin_lps, [-10.0, -20.0, -30.0])
    np.testing.assert_allclose(volume.ijk_to_ras, ijk_to_ras)
    assert volume.shape_xyz == (4, 3, 2)


def test_sitk_round_trip_is_exact() -> None:
    image = _oblique_image()
    back = volume_to_sitk(sitk_to_volume(image))
    assert back.GetSpacing() == image.GetSpacing()
    assert back.GetOrigin() == image.GetOrigin()
    assert back.GetDirection() == image.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))


def test_sitk_geometry_matrix_matches_volume() -> None:
    image = _oblique_image()
    np.testing.assert_array_equal(sitk_geometry_matrix(image), sitk_to_volume(image).ijk_to_lps)
    point = image.TransformContinuousIndexToPhysicalPoint([1.0, 2.5, 3.0])
    np.testing.assert_allclose((sitk_geometry_matrix(image) @ [1.0, 2.5, 3.0, 1.0])[:3], point, atol=1e-12)


def test_bool_volume_converts_to_uint8() -> None:
    volume = Volume(np.ones((2, 2, 2), bool), [1, 1, 1], [0, 0, 0])
    assert volume_to_sitk(volume).GetPixelID() == sitk.sitkUInt8


def test_geometry_is_read_only() -> None:
    volume = Volume(np.zeros((2, 2, 2)), [1, 1, 1], [0, 0, 0])
    with pytest.raises(ValueError):
        volume.spacing_mm[0] = 2.0
    with pytest.raises(AttributeError):
        volume.spacing_mm = np.ones(3)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"array": np.zeros((2, 2))}, "3-D"),
        ({"spacing_mm": [1, 1]}, "spacing_mm"),
        ({"spacing_mm": [1, 0, 1]}, "positive"),
        ({"origin_lps": [0, np.nan, 0]}, "finite"),
        ({"direction": np.zeros((3, 3))}, "singular"),
        ({"direction": np.eye(4)}, "3x3"),
    ],
)
def test_invalid_volume_raises(kwargs: dict, match: str) -> None:
    args = {"array": np.zeros((2, 2, 2)), "spacing_mm": [1, 1, 1], "origin_lps": [0, 0, 0], **kwargs}
    with pytest.raises(ValueError, match=match):
        Volume(**args)


def test_from_ijk_to_ras_rejects_bad_matrix() -> None:
    with pytest.raises(ValueError, match="4x4"):
        Volume.from_ijk_to_ras(np.zeros((2, 2, 2)), np.eye(3))


@pytest.mark.parametrize("is_left_handed", [False, True])
def test_slicer_mrml_geometry_agrees(tmp_path, is_left_handed: bool) -> None:
    """Slicer (slicer-core) loads our NRRD so that each voxel value sits at the same world point.

    Slicer reverses the k axis of left-handed images, so only the voxel-to-world
    mapping, not the matrix itself, is compared in that case.
    """
    slicer = pytest.importorskip("slicer")
    slicer_util = pytest.importorskip("slicer.util")

    image = _oblique_image()
    if not is_left_handed:
        image.SetDirection((np.array(image.GetDirection()).reshape(3, 3) @ np.diag([1.0, 1.0, -1.0])).ravel().tolist())
    path = tmp_path / "oblique.nrrd"
    sitk.WriteImage(image, str(path))
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    ijk_to_ras = np.eye(4)
    matrix = slicer_util.vtkMatrixFromArray(ijk_to_ras)
    node.GetIJKToRASMatrix(matrix)
    ijk_to_ras = slicer_util.arrayFromVTKMatrix(matrix)
    from_slicer = Volume.from_ijk_to_ras(slicer_util.arrayFromVolume(node).copy(), ijk_to_ras)
    ours = sitk_to_volume(image)
    if not is_left_handed:
        np.testing.assert_allclose(ours.ijk_to_ras, ijk_to_ras, atol=1e-6)
    for value in (0, 17, 119):
        k, j, i = np.argwhere(from_slicer.array == value)[0]
        kk, jj, ii = np.argwhere(ours.array == value)[0]
        np.testing.assert_allclose(from_slicer.ijk_to_lps @ [i, j, k, 1], ours.ijk_to_lps @ [ii, jj, kk, 1], atol=1e-5)
