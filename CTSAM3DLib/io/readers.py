"""Reading CT images and writing masks with SimpleITK.

Any file SimpleITK can read (NIfTI ``.nii``/``.nii.gz``, NRRD, MetaImage
``.mha``/``.mhd``, single-file DICOM ...) or a folder holding a DICOM series is
accepted. The image must be one 3-D scalar volume: 2-D images, 4-D/time series,
vector (multi-component) images and float images with NaN/inf are refused with
an `ImageReadError` that names the file and the problem.

Arrays are ``(z, y, x)``; geometry is ITK's LPS (see `CTSAM3DLib.io.volume`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from CTSAM3DLib.io.volume import Volume

logger = logging.getLogger(__name__)

# SimpleITK pixel types whose values can be NaN or infinite.
_FLOAT_PIXEL_IDS = (sitk.sitkFloat32, sitk.sitkFloat64)
# Suggested mask file types, named in error messages.
_WRITE_EXAMPLES = ".nii.gz, .nrrd, .seg.nrrd or .mha"


class ImageReadError(ValueError):
    """The input is missing, unreadable, or not a single 3-D scalar image."""


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
    _check_image(image, path)
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
    reader.SetFileNames(files_per_series[series_id])
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise ImageReadError(f"Cannot read the DICOM series in '{folder}': {_short_reason(error)}") from None


def _check_image(image: sitk.Image, path: Path) -> None:
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
            kind = "NaN" if np.isnan(view).any() else "infinite"
            raise ImageReadError(
                f"'{path}' contains {int(finite.size - finite.sum())} voxel(s) that are NaN or infinite "
                f"(at least one is {kind}); the image is damaged or was written by a failed "
                "computation. Replace those values (e.g. with -1024 HU) before segmenting."
            )


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
    """Write a label mask on the grid of a reference image.

    Args:
        mask_zyx: integer or bool labels, shape ``(z, y, x)`` equal to the
            reference's; written as uint8.
        reference: the image whose spacing, origin and direction (LPS) are copied.
        path: output file; the format follows the extension (.nii.gz, .nrrd,
            .seg.nrrd, .mha ...). Written
            compressed where the format allows.
        overwrite: replace an existing file. Default False.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
        FileNotFoundError: if the output folder does not exist.
        ValueError: for a wrong shape, a non-integer mask, labels outside 0..255,
            or an extension SimpleITK cannot write.
    """
    path = Path(path)
    mask = _as_uint8_mask(mask_zyx, _reference_shape_zyx(reference))
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Not writing the mask: '{path}' already exists. Choose another file name or pass "
            "overwrite=True (--overwrite on the command line) to replace it."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write '{path}': folder '{path.parent}' does not exist.")
    image = sitk.GetImageFromArray(mask)
    _copy_geometry(image, reference)
    try:
        sitk.WriteImage(image, str(path), useCompression=True)
    except RuntimeError as error:
        raise ValueError(
            f"Cannot write the mask to '{path}': {_short_reason(error)}. Use {_WRITE_EXAMPLES}."
        ) from None
    logger.info("Wrote mask %s (%d foreground voxels)", path, int(np.count_nonzero(mask)))


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
