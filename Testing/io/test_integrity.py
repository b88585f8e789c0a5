"""Damaged input ITK would read silently: truncated/NaN NIfTI, incomplete DICOM series, 2-D mask formats."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.io.readers import ImageReadError, check_mask_path, read_image, write_mask

DICOM_SERIES = Path("dicom/ct-3slice-with-seg/ct-3slice")


def _ct(pixel_id: int = sitk.sitkInt16) -> sitk.Image:
    array = np.arange(20 * 30 * 40).reshape(20, 30, 40) % 2000 - 1000
    image = sitk.Cast(sitk.GetImageFromArray(array.astype(np.int32)), pixel_id)
    image.SetSpacing((0.8, 0.8, 2.5))
    return image


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("keep", ["half", "header+1000"])
def test_truncated_nifti_is_refused(tmp_path: Path, suffix: str, keep: str) -> None:
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(_ct(), str(path), useCompression=suffix.endswith(".gz"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if keep == "half" else data[:352 + 1000])
    with pytest.raises(ImageReadError, match=r"ct\.nii.*(truncated|gzip stream is incomplete)"):
        read_image(path)


@pytest.mark.parametrize("where", ["crc", "data"])
def test_nifti_gzip_with_a_flipped_bit_is_refused(tmp_path: Path, where: str) -> None:
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct(), str(path), useCompression=True)
    data = bytearray(path.read_bytes())
    data[-6 if where == "crc" else len(data) // 2] ^= 0x01  # the stored CRC-32, or inside the deflate data
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match=r"ct\.nii\.gz.*damaged"):
        read_image(path)


def test_nifti_whose_header_promises_more_voxels_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii"
    sitk.WriteImage(_ct(), str(path))
    data = bytearray(path.read_bytes())
    data[42:44] = np.int16(80).tobytes()  # dim[1]: 40 -> 80 voxels along x
    path.write_bytes(bytes(data))
    with pytest.raises(ImageReadError, match="truncated.*48000 voxels"):
        read_image(path)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_with_nan_or_inf_is_refused_like_other_formats(tmp_path: Path, suffix: str) -> None:
    array = np.zeros((20, 30, 40), np.float32)
    array[3, 4, 5], array[6, 7, 8] = np.nan, np.inf
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path))
    with pytest.raises(ImageReadError, match="2 voxel.*NaN"):
        read_image(path)


def test_intact_float_nifti_is_read(tmp_path: Path) -> None:
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct(sitk.sitkFloat32), str(path))
    assert read_image(path).GetSize() == (40, 30, 20)


def test_dicom_series_with_an_unreadable_file_is_refused(tmp_path: Path, shared_data: Path) -> None:
    folder = tmp_path / "series"
    shutil.copytree(shared_data / DICOM_SERIES, folder)
    broken = folder / "02.dcm"
    broken.chmod(0o644)
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="02.dcm"):
        read_image(folder)


def _write_dicom_series(folder: Path, z_positions: list[float]) -> None:
    folder.mkdir()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for n, z in enumerate(z_positions):
        slice_ = sitk.GetImageFromArray(np.full((1, 8, 8), n, np.int16))
        for tag, value in (("0008|0060", "CT"), ("0020|000d", "1.2.3"), ("0020|000e", "1.2.3.4"),
                           ("0020|0013", str(n + 1)), ("0020|0032", f"0\\0\\{z}"),
                           ("0020|0037", "1\\0\\0\\0\\1\\0"), ("0028|0030", "1\\1"),
                           ("0008|0018", f"1.2.3.4.{n + 1}")):
            slice_.SetMetaData(tag, value)
        writer.SetFileName(str(folder / f"{n:02d}.dcm"))
        writer.Execute(slice_)


def test_dicom_series_with_a_gap_is_refused(tmp_path: Path) -> None:
    _write_dicom_series(tmp_path / "even", [0.0, 1.0, 2.0, 3.0])
    assert read_image(tmp_path / "even").GetSize() == (8, 8, 4)
    _write_dicom_series(tmp_path / "gap", [0.0, 1.0, 2.0, 4.0, 5.0])
    with pytest.raises(ImageReadError, match=r"unevenly spaced.*02.dcm and 03.dcm are 2.000 mm apart.*1.000 mm"):
        read_image(tmp_path / "gap")


@pytest.mark.parametrize("name", ["mask.png", "mask.jpg", "mask.xyz", "mask", "mask.nhdr"])
def test_mask_formats_that_are_not_3d_are_refused_before_writing(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="not a 3-D image format"):
        check_mask_path(tmp_path / name)
    with pytest.raises(ValueError, match="not a 3-D image format"):
        write_mask(np.zeros((2, 2, 2), np.uint8), sitk.Image(2, 2, 2, sitk.sitkUInt8), tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_gzip_payload_is_checked_not_just_the_header(tmp_path: Path) -> None:
    """A stream cut inside the voxel data (header intact) is what ITK zero-fills."""
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(_ct(), str(path), useCompression=True)
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[: len(raw) - 100]))  # a complete gzip stream of a short file
    with pytest.raises(ImageReadError, match=r"truncated.*holds only \d+ bytes"):
        read_image(path)
