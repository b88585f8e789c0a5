"""Reading CT images and writing masks with SimpleITK.

Any file SimpleITK can read (NIfTI ``.nii``/``.nii.gz``, NRRD, MetaImage
``.mha``/``.mhd``, single-file DICOM ...) or a folder holding a DICOM series is
accepted. The image must be one 3-D scalar volume: 2-D images, 4-D/time series,
vector (multi-component) images and float images with NaN/inf are refused with
an `ImageReadError` that names the file and the problem. So are damaged files that
ITK would read without complaint: a NIfTI whose voxel data is shorter than its
header says or whose gzip stream is cut or fails its CRC (ITK zero-fills them), a
NIfTI with NaN/inf voxels (ITK turns them into 0), and a DICOM folder with a file
that cannot be read or with unevenly spaced slices (ITK drops the file and
stretches the grid). The checks are in `CTSAM3DLib.io.integrity`.

Arrays are ``(z, y, x)``; geometry is ITK's LPS (see `CTSAM3DLib.io.volume`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CTSAM3DLib.io.atomic import atomic_path, check_writable
from CTSAM3DLib.io.integrity import (
    ImageReadError,
    check_compressed_payload,
    check_dicom_series,
    check_nifti_payload,
    nonfinite_message,
)
from CTSAM3DLib.io.volume import Volume

logger = logging.getLogger(__name__)

# SimpleITK pixel types whose values can be NaN or infinite.
_FLOAT_PIXEL_IDS = (sitk.sitkFloat32, sitk.sitkFloat64)
# Mask file types written (single-file 3-D formats); ".seg.nrrd" is a ".nrrd".
MASK_EXTENSIONS = (".nii.gz", ".nii", ".nrrd", ".mha")


def read_image(path: str | Path) -> sitk.Image:
    """Read a 3-D scalar image file or a DICOM series folder.

    Args:
        path: an image file, or a folder holding DICOM files (the series with
            the most files is read).

    Returns:
        The 3-D single-component image, pixel type as stored (geometry in LPS).
        A 4-D image whose 4th axis has size 1 is returned as 3-D.

    Raises:
        ImageReadError: if the path is missing, not an image, 2-D, 4-D, vector
            valued, or a float image containing NaN or infinite values.
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"Cannot read image '{path}': no such file or folder.")
    image = _read_dicom_folder(path) if path.is_dir() else _read_file(path)
    check_image(image, path)
    return image


def _read_file(path: Path) -> sitk.Image:
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise ImageReadError(
            f"Cannot read '{path}' as an image: SimpleITK found no reader for it or the file is "
            f"damaged. Use a 3-D NIfTI, NRRD, MetaImage or DICOM series folder. ({_short_reason(error)})"
        ) from None
    _check_header(reader, path)
    check_nifti_payload(path)
    check_compressed_payload(path)
    size = reader.GetSize()
    if len(size) == 4:
        reader.SetExtractSize([*size[:3], 0])  # drop the singleton 4th axis
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"Cannot read the voxels of '{path}': {_short_reason(error)}") from None


def _check_header(reader: sitk.ImageFileReader, path: Path) -> None:
    dimension, size = reader.GetDimension(), reader.GetSize()
    if reader.GetNumberOfComponents() > 1:
        raise ImageReadError(
            f"'{path}' is a vector image with {reader.GetNumberOfComponents()} components per voxel "
            "(e.g. RGB or a displacement field); CT segmentation needs one scalar value per voxel."
        )
    if dimension > 4 or (dimension == 4 and size[3] != 1):
        raise ImageReadError(
            f"'{path}' is a {dimension}-D image of size {list(size)} (e.g. a time series); "
            "a single 3-D CT volume is needed. Extract one 3-D volume first."
        )


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder))
    if not series_ids:
        raise ImageReadError(
            f"Folder '{folder}' contains no DICOM series (sub-folders are not searched). "
            "Give the folder that holds the .dcm files, or an image file."
        )
    files_per_series = {sid: reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids}
    series_id = max(files_per_series, key=lambda sid: len(files_per_series[sid]))
    if len(series_ids) > 1:
        logger.info("'%s' holds %d DICOM series; reading %s (%d files)", folder, len(series_ids),
                    series_id, len(files_per_series[series_id]))
    files = files_per_series[series_id]
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"Cannot read the DICOM series in '{folder}': {_short_reason(error)}") from None
    positions = [reader.GetMetaData(n, "0020|0032") if reader.HasMetaDataKey(n, "0020|0032") else None
                 for n in range(len(files))]
    check_dicom_series(folder, [f for fs in files_per_series.values() for f in fs], files, positions,
                       np.array(image.GetDirection()).reshape(3, 3)[:, 2])
    return image


def check_image(image: sitk.Image, path: str | Path) -> None:
    """Refuse an image that is not one 3-D scalar volume with finite values.

    Args:
        image: the image to check.
        path: its file (or a description such as "the image given to Session.set_volume"), for messages.

    Raises:
        ImageReadError: vector valued, 2-D (or a side under 2 voxels), or NaN/inf voxels.
    """
    size = image.GetSize()
    if image.GetNumberOfComponentsPerPixel() > 1:
        raise ImageReadError(f"'{path}' is a vector image; CT segmentation needs one value per voxel.")
    if image.GetDimension() != 3 or min(size) < 2:
        raise ImageReadError(
            f"'{path}' is a 2-D image (size {list(size)}); a 3-D volume with at least 2 voxels along "
            "each axis is needed. For a DICOM series, give the folder holding all its slices."
        )
    if image.GetPixelID() in _FLOAT_PIXEL_IDS:
        view = sitk.GetArrayViewFromImage(image)
        finite = np.isfinite(view)
        if not finite.all():
            raise ImageReadError(nonfinite_message(path, int(finite.size - finite.sum()), bool(np.isnan(view).any())))


def _short_reason(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def sitk_to_volume(image: sitk.Image) -> Volume:
    """Convert a 3-D scalar SimpleITK image to a `Volume` (array copied, geometry exact).

    Args:
        image: 3-D single-component image.

    Returns:
        Volume with ``array`` shape ``(z, y, x)`` in the image's pixel dtype.

    Raises:
        ValueError: if the image is not 3-D scalar.
    """
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"Expected a 3-D scalar image, got {image.GetDimension()}-D with "
            f"{image.GetNumberOfComponentsPerPixel()} components."
        )
    return Volume(
        array=sitk.GetArrayFromImage(image),
        spacing_mm=np.array(image.GetSpacing()),
        origin_lps=np.array(image.GetOrigin()),
        direction=np.array(image.GetDirection()).reshape(3, 3),
    )


def sitk_geometry_matrix(image: sitk.Image) -> np.ndarray:
    """The 4x4 ijk-to-LPS matrix of a SimpleITK image (same as `Volume.ijk_to_lps`).

    Args:
        image: a 3-D image.

    Returns:
        float64 ``(4, 4)`` mapping homogeneous (i, j, k, 1) to (L, P, S, 1) mm.
    """
    if image.GetDimension() != 3:
        raise ValueError(f"Expected a 3-D image, got {image.GetDimension()}-D.")
    matrix = np.eye(4)
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    matrix[:3, :3] = direction @ np.diag(image.GetSpacing())
    matrix[:3, 3] = image.GetOrigin()
    return matrix


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Convert a `Volume` to a SimpleITK image (array copied, geometry exact).

    Bool arrays become uint8 and float16 becomes float32 (SimpleITK has neither).

    Args:
        volume: the volume; its ``array`` is ``(z, y, x)``.

    Returns:
        3-D scalar image with the volume's spacing, origin and direction (LPS).
    """
    array = volume.array
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif array.dtype == np.float16:
        array = array.astype(np.float32)
    image = sitk.GetImageFromArray(array, isVector=False)
    _copy_geometry(image, volume)
    return image


def _copy_geometry(image: sitk.Image, reference: Volume | sitk.Image) -> None:
    if isinstance(reference, Volume):
        image.SetSpacing([float(v) for v in reference.spacing_mm])
        image.SetOrigin([float(v) for v in reference.origin_lps])
        image.SetDirection([float(v) for v in reference.direction.ravel()])
    else:
        image.CopyInformation(reference)


def read_volume(path: str | Path) -> Volume:
    """Read an image file or DICOM series folder as a `Volume`.

    Args:
        path: see `read_image`.

    Returns:
        Volume with ``array`` ``(z, y, x)`` in the stored dtype, geometry in LPS.

    Raises:
        ImageReadError: see `read_image`.
    """
    return sitk_to_volume(read_image(path))


def write_mask(
    mask_zyx: np.ndarray,
    reference: Volume | sitk.Image,
    path: str | Path,
    overwrite: bool = False,
) -> None:
    """Write a label mask on the grid of a reference image, atomically (`CTSAM3DLib.io.atomic`).

    Args:
        mask_zyx: integer or bool labels, shape ``(z, y, x)`` equal to the
            reference's; written as uint8.
        reference: the image whose spacing, origin and direction (LPS) are copied.
        path: output file; the format follows the extension (`MASK_EXTENSIONS`,
            .seg.nrrd included). Written compressed where the format allows.
        overwrite: replace an existing file. Default False: the file is created
            exclusively, so a file that appears during the write is kept.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: if the output folder does not exist.
        ValueError: for a wrong shape, a non-integer mask, labels outside 0..255,
            or an extension that is not a 3-D mask format.
    """
    path = check_mask_path(path, overwrite)
    mask = _as_uint8_mask(mask_zyx, _reference_shape_zyx(reference))
    image = sitk.GetImageFromArray(mask)
    _copy_geometry(image, reference)
    with atomic_path(path, overwrite) as tmp:
        try:
            sitk.WriteImage(image, str(tmp), useCompression=True)
        except RuntimeError as error:
            raise ValueError(f"Cannot write the mask to '{path}': {_short_reason(error)}.") from None
    logger.info("Wrote mask %s (%d foreground voxels)", path, int(np.count_nonzero(mask)))


def check_mask_path(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse a mask destination before any computation: wrong format, existing file, missing folder.

    Masks are 3-D, so only single-file 3-D formats are written (`MASK_EXTENSIONS`;
    ``.seg.nrrd`` is NRRD); 2-D formats such as ``.png`` would keep one slice.

    Raises:
        ValueError: an extension that is not a 3-D mask format.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: the folder does not exist.
    """
    path = Path(path)
    if not path.name.lower().endswith(MASK_EXTENSIONS):
        raise ValueError(f"Cannot write a 3-D mask to '{path}': the extension '{''.join(path.suffixes) or '(none)'}' "
                         f"is not a 3-D image format. Use one of {', '.join(MASK_EXTENSIONS)} or .seg.nrrd.")
    return check_writable(path, overwrite)


def _reference_shape_zyx(reference: Volume | sitk.Image) -> tuple[int, ...]:
    if isinstance(reference, Volume):
        return tuple(reference.array.shape)
    if isinstance(reference, sitk.Image):
        return tuple(reversed(reference.GetSize()))
    raise TypeError(f"reference must be a Volume or a SimpleITK image, got {type(reference).__name__}.")


def _as_uint8_mask(mask_zyx: np.ndarray, shape_zyx: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask_zyx)
    if mask.shape != shape_zyx:
        raise ValueError(f"Mask shape {mask.shape} (z, y, x) does not match the reference image {shape_zyx}.")
    if mask.dtype == np.bool_ or mask.dtype == np.uint8:
        return np.ascontiguousarray(mask, dtype=np.uint8)
    if not np.issubdtype(mask.dtype, np.integer):
        raise ValueError(f"Mask must be bool or integer labels, got dtype {mask.dtype}; threshold it first.")
    if mask.size and (mask.min() < 0 or mask.max() > 255):
        raise ValueError(f"Mask labels must lie in 0..255, got {mask.min()}..{mask.max()}.")
    return np.ascontiguousarray(mask, dtype=np.uint8)
