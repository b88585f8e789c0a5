"""Tests for CTSAM3DLib.io.readers: reading images, refusing bad ones, writing masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.io import ImageReadError, Volume, read_image, read_volume, sitk_to_volume, write_mask

# Shared test data, relative to the `shared_data` fixture (../shared/data beside the checkout).
DICOM_SERIES = Path("dicom/ct-3slice-with-seg/ct-3slice")
THORAX_CT = Path("unlabeled/thorax_ct.nii.gz")


def _ct_image(size_xyz: tuple[int, int, int] = (6, 5, 4), pixel_id: int = sitk.sitkInt16) -> sitk.Image:
    array = np.random.default_rng(0).integers(-1000, 1000, size_xyz[::-1]).astype(np.int16)
    image = sitk.Cast(sitk.GetImageFromArray(array), pixel_id)
    image.SetSpacing([0.7, 0.8, 2.0])
    image.SetOrigin([-10.0, 20.0, 30.0])
    direction = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    image.SetDirection(direction.ravel().tolist())
    return image


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_read_volume_keeps_geometry_and_values(tmp_path: Path, suffix: str) -> None:
    image = _ct_image()
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(image, str(path))
    volume = read_volume(path)
    assert volume.array.shape == (4, 5, 6) and volume.array.dtype == np.int16
    np.testing.assert_array_equal(volume.array, sitk.GetArrayFromImage(image))
    np.testing.assert_allclose(volume.spacing_mm, image.GetSpacing(), atol=1e-6)
    np.testing.assert_allclose(volume.origin_lps, image.GetOrigin(), atol=1e-5)
    np.testing.assert_allclose(volume.direction.ravel(), image.GetDirection(), atol=1e-6)


def test_read_dicom_series_folder(shared_data: Path) -> None:
    image = read_image(shared_data / DICOM_SERIES)
    assert image.GetSize() == (512, 512, 3)
    volume = sitk_to_volume(image)
    assert volume.array.shape == (3, 512, 512)
    assert volume.array.min() < -500 < volume.array.max()


def test_read_thorax(shared_data: Path) -> None:
    image = read_image(shared_data / THORAX_CT)
    assert image.GetSize() == (512, 512, 141) and image.GetPixelID() == sitk.sitkInt16


def _write(image: sitk.Image, path: Path) -> Path:
    sitk.WriteImage(image, str(path))
    return path


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "absent.nii.gz")


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    with pytest.raises(ImageReadError, match=r"notes\.txt"):
        read_image(path)


def test_folder_without_dicom(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("no images here")
    with pytest.raises(ImageReadError, match="no DICOM series"):
        read_image(tmp_path)


def test_2d_images_are_refused(tmp_path: Path) -> None:
    flat = _write(sitk.Image([8, 8], sitk.sitkInt16), tmp_path / "flat.nrrd")
    with pytest.raises(ImageReadError, match="2-D"):
        read_image(flat)
    one_slice = _write(sitk.Image([8, 8, 1], sitk.sitkInt16), tmp_path / "slice.nrrd")
    with pytest.raises(ImageReadError, match="2-D"):
        read_image(one_slice)


def test_4d_image_is_refused(tmp_path: Path) -> None:
    path = _write(sitk.Image([5, 5, 5, 3], sitk.sitkInt16), tmp_path / "series.nii.gz")
    with pytest.raises(ImageReadError, match="4-D"):
        read_image(path)


def test_4d_image_with_one_time_point_is_read_as_3d(tmp_path: Path) -> None:
    image = sitk.Image([5, 4, 3, 1], sitk.sitkInt16)
    image.SetSpacing([0.5, 0.6, 0.7, 1.0])
    path = _write(image, tmp_path / "single.mha")
    read = read_image(path)
    assert read.GetSize() == (5, 4, 3)
    np.testing.assert_allclose(read.GetSpacing(), [0.5, 0.6, 0.7])


def test_vector_image_is_refused(tmp_path: Path) -> None:
    path = _write(sitk.Image([5, 5, 5], sitk.sitkVectorFloat32, 3), tmp_path / "rgb.nrrd")
    with pytest.raises(ImageReadError, match="vector"):
        read_image(path)


@pytest.mark.parametrize("bad_value", [np.nan, np.inf])
def test_non_finite_float_image_is_refused(tmp_path: Path, bad_value: float) -> None:
    array = np.zeros((4, 4, 4), np.float32)
    array[1, 2, 3] = bad_value
    path = _write(sitk.GetImageFromArray(array), tmp_path / "broken.nrrd")
    with pytest.raises(ImageReadError, match="NaN or infinite"):
        read_image(path)


def test_write_mask_copies_geometry_and_compresses(tmp_path: Path) -> None:
    image = _ct_image()
    volume = sitk_to_volume(image)
    mask = (volume.array > 0).astype(np.uint8)
    path = tmp_path / "mask.nrrd"
    write_mask(mask, volume, path)
    written = sitk.ReadImage(str(path))
    assert written.GetPixelID() == sitk.sitkUInt8
    assert written.GetSpacing() == image.GetSpacing()
    assert written.GetOrigin() == image.GetOrigin()
    assert written.GetDirection() == image.GetDirection()
    np.testing.assert_array_equal(sitk.GetArrayFromImage(written), mask)
    assert b"encoding: gzip" in path.read_bytes()[:1000]


def test_write_mask_with_sitk_reference_and_bool_mask(tmp_path: Path) -> None:
    image = _ct_image()
    mask = np.zeros((4, 5, 6), bool)
    mask[1:3, 2:4, 3:5] = True
    path = tmp_path / "mask.nii.gz"
    write_mask(mask, image, path)
    volume = read_volume(path)
    np.testing.assert_array_equal(volume.array, mask.astype(np.uint8))
    np.testing.assert_allclose(volume.origin_lps, image.GetOrigin(), atol=1e-5)


def test_write_mask_refuses_to_overwrite(tmp_path: Path) -> None:
    volume = Volume(np.zeros((2, 3, 4), np.int16), [1, 1, 1], [0, 0, 0])
    path = tmp_path / "mask.nrrd"
    path.write_text("precious")
    with pytest.raises(FileExistsError, match="already exists"):
        write_mask(np.ones((2, 3, 4), np.uint8), volume, path)
    assert path.read_text() == "precious"
    write_mask(np.ones((2, 3, 4), np.uint8), volume, path, overwrite=True)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).sum() == 24


@pytest.mark.parametrize(
    ("mask", "match"),
    [(np.ones((2, 3, 5), np.uint8), "shape"), (np.ones((2, 3, 4), np.float32), "integer"),
     (np.full((2, 3, 4), 300), "0..255")],
)
def test_write_mask_rejects_bad_masks(tmp_path: Path, mask: np.ndarray, match: str) -> None:
    volume = Volume(np.zeros((2, 3, 4), np.int16), [1, 1, 1], [0, 0, 0])
    with pytest.raises(ValueError, match=match):
        write_mask(mask, volume, tmp_path / "mask.nrrd")


def test_write_mask_bad_destination(tmp_path: Path) -> None:
    volume = Volume(np.zeros((2, 3, 4), np.int16), [1, 1, 1], [0, 0, 0])
    mask = np.zeros((2, 3, 4), np.uint8)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        write_mask(mask, volume, tmp_path / "missing" / "mask.nrrd")
    with pytest.raises(ValueError, match="Cannot write"):
        write_mask(mask, volume, tmp_path / "mask.unknownformat")
