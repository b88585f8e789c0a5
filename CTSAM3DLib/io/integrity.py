"""Damage ITK reads without complaint: truncated or non-finite NIfTI data, incomplete DICOM series.

ITK zero-fills the missing voxels of a NIfTI file cut short (plain or gzip), turns NaN/inf
NIfTI voxels into 0, decodes a damaged compressed NRRD or MetaImage payload without checking
its checksum, and reads a DICOM series with an unreadable file as a shorter series on a
stretched grid. Each would give a wrong segmentation with no error, so these checks
refuse such input with an `ImageReadError` naming the file and the problem.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np

# NIfTI datatype codes of real floating-point voxels -> numpy dtype char.
_NIFTI_FLOATS = {16: "f4", 64: "f8"}
# Bytes read per step when scanning a payload.
_CHUNK = 1 << 24
# Relative and absolute tolerance (mm) on the spacing between DICOM slices.
_SLICE_REL_TOL, _SLICE_ABS_TOL = 0.02, 0.01


class ImageReadError(ValueError):
    """The input is missing, unreadable, damaged, or not a single 3-D scalar image."""


def nonfinite_message(path: str | Path, count: int, has_nan: bool) -> str:
    """The message for an image with ``count`` NaN / infinite voxels."""
    kind = "NaN" if has_nan else "infinite"
    return (f"'{path}' contains {count} voxel(s) that are NaN or infinite (at least one is {kind}); the image is "
            "damaged or was written by a failed computation. Replace those values (e.g. with -1024 HU) before "
            "segmenting.")


def check_nifti_payload(path: Path) -> None:
    """Refuse a ``.nii`` / ``.nii.gz`` whose voxel data is short, whose gzip stream is damaged, or
    whose float voxels are not all finite. Other files are left alone.

    Raises:
        ImageReadError: naming the file, the bytes expected and the bytes found.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return
    compressed = name.endswith(".gz")
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            header = _NiftiHeader.read(f, path)
            if header is None:
                return  # not a NIfTI header at all: ITK has already named the problem or read it
            found, nonfinite, has_nan = _scan_payload(f, header, compressed)
    except (EOFError, gzip.BadGzipFile, zlib.error) as error:
        raise ImageReadError(
            f"'{path}' is damaged: its gzip stream is incomplete or fails its checksum ({error}). The file was "
            "probably cut short while copying or downloading; copy it again."
        ) from None
    expected = header.vox_offset + header.payload_bytes
    if found < expected:
        raise ImageReadError(
            f"'{path}' is truncated: its header describes {header.n_voxels} voxels ({header.payload_bytes} bytes "
            f"of voxel data from byte {header.vox_offset}), but the {'uncompressed ' if compressed else ''}file "
            f"holds only {found} bytes. The file was cut short while copying or downloading; copy it again."
        )
    if nonfinite:
        raise ImageReadError(nonfinite_message(path, nonfinite, has_nan))


def check_compressed_payload(path: Path) -> None:
    """Refuse a single-file NRRD (gzip encoding) or MetaImage (compressed) whose embedded stream is
    damaged: cut short, or failing its CRC-32 / Adler-32 checksum. Other files are left alone.

    Raises:
        ImageReadError: naming the file.
    """
    name = path.name.lower()
    if not name.endswith((".nrrd", ".mha")):
        return
    with open(path, "rb") as f:
        head = f.read(1 << 16)
        try:
            if name.endswith(".nrrd"):
                end = head.find(b"\n\n")
                fields = head[:end].decode("latin-1").lower()
                if end >= 0 and "encoding: gz" in fields and "data file:" not in fields:
                    f.seek(end + 2)
                    with gzip.GzipFile(fileobj=f) as stream:
                        while stream.read(_CHUNK):
                            pass
            else:
                marker = b"ElementDataFile = LOCAL\n"
                end = head.find(marker)
                if end >= 0 and b"CompressedData = True" in head[:end]:
                    f.seek(end + len(marker))
                    found = _inflate_length(f)
                    expected = _metaimage_bytes(head[:end].decode("latin-1"))
                    if expected is not None and found < expected:
                        raise EOFError(f"{found} bytes of voxel data, but its header describes {expected}")
        except (EOFError, gzip.BadGzipFile, zlib.error) as error:
            raise ImageReadError(
                f"'{path}' is damaged: its compressed voxel data is incomplete or fails its checksum ({error}). "
                "The file was probably cut short or altered while copying or downloading; copy it again."
            ) from None


def _inflate_length(f: BinaryIO) -> int:
    """Bytes a zlib stream read from ``f`` decompresses to (its Adler-32 is checked at the end)."""
    stream, length = zlib.decompressobj(), 0
    while chunk := f.read(_CHUNK):
        length += len(stream.decompress(chunk))
        if stream.eof:
            return length
    raise EOFError("the compressed stream ends early")


# MetaImage element types -> bytes per value.
_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_LONG": 4, "MET_ULONG": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4,
              "MET_DOUBLE": 8}


def _metaimage_bytes(header: str) -> int | None:
    """Voxel-data bytes a MetaImage header describes (None if it cannot tell)."""
    fields = {k.strip(): v.strip() for k, _, v in (line.partition("=") for line in header.splitlines())}
    try:
        sizes = [int(v) for v in fields["DimSize"].split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
        return int(np.prod(sizes, dtype=object)) * channels * _MET_BYTES[fields["ElementType"]]
    except (KeyError, ValueError):
        return None


class _NiftiHeader:
    """The fields of a NIfTI-1/-2 header that fix the size and type of the voxel data."""

    def __init__(self, n_voxels: int, bitpix: int, datatype: int, vox_offset: int, byteorder: str) -> None:
        self.n_voxels, self.bitpix, self.datatype = n_voxels, bitpix, datatype
        self.vox_offset, self.byteorder = vox_offset, byteorder
        self.payload_bytes = n_voxels * bitpix // 8

    @classmethod
    def read(cls, f: BinaryIO, path: Path) -> _NiftiHeader | None:
        raw = f.read(540)
        if len(raw) < 348:
            raise ImageReadError(f"'{path}' is truncated: {len(raw)} bytes, shorter than a NIfTI header (348 bytes).")
        for order in "<>":
            size = struct.unpack(order + "i", raw[:4])[0]
            if size == 348 and raw[344:347] == b"n+1":
                dims = struct.unpack(order + "8h", raw[40:56])
                datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
                vox_offset = int(struct.unpack(order + "f", raw[108:112])[0])
                return cls._checked(dims, datatype, bitpix, max(vox_offset, 352), order, path)
            if size == 540 and raw[4:7] == b"n+2":
                if len(raw) < 540:
                    raise ImageReadError(f"'{path}' is truncated: {len(raw)} bytes, shorter than a NIfTI-2 header.")
                datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
                dims = struct.unpack(order + "8q", raw[16:80])
                vox_offset = struct.unpack(order + "q", raw[168:176])[0]
                return cls._checked(dims, datatype, bitpix, max(vox_offset, 544), order, path)
        return None  # "ni1"/"ni2" (.hdr/.img pair) or not NIfTI

    @classmethod
    def _checked(cls, dims: Sequence[int], datatype: int, bitpix: int, vox_offset: int, order: str,
                 path: Path) -> _NiftiHeader:
        ndim = dims[0]
        if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0 or bitpix % 8:
            raise ImageReadError(f"'{path}' has a damaged NIfTI header: dimensions {list(dims[:ndim + 1])}, "
                                 f"{bitpix} bits per voxel.")
        n_voxels = int(np.prod([int(d) for d in dims[1:ndim + 1]], dtype=object))
        return cls(n_voxels, bitpix, datatype, vox_offset, order)


def _scan_payload(f: BinaryIO, header: _NiftiHeader, compressed: bool) -> tuple[int, int, bool]:
    """(file bytes, non-finite voxels, any NaN); a gzip stream is read to its end, which checks its CRC."""
    dtype = _NIFTI_FLOATS.get(header.datatype)
    if dtype is None and not compressed:
        return os.fstat(f.fileno()).st_size, 0, False
    values_dtype = np.dtype(header.byteorder + dtype) if dtype else None
    begin, end = header.vox_offset, header.vox_offset + header.payload_bytes
    f.seek(0)
    position, nonfinite, has_nan, rest = 0, 0, False, b""
    while chunk := f.read(_CHUNK):
        start, position = position, position + len(chunk)
        if values_dtype is None or position <= begin or start >= end:
            continue
        data = rest + chunk[max(0, begin - start):max(0, end - start)]
        usable = len(data) - len(data) % values_dtype.itemsize
        values = np.frombuffer(data[:usable], dtype=values_dtype)
        finite = np.isfinite(values)
        if not finite.all():
            nonfinite += int(finite.size - np.count_nonzero(finite))
            has_nan = has_nan or bool(np.isnan(values).any())
        rest = data[usable:]
    return position, nonfinite, has_nan


def check_dicom_series(folder: Path, files_in_series: Sequence[str], series_files: Sequence[str],
                       positions: Sequence[str | None], slice_normal: np.ndarray) -> None:
    """Refuse a DICOM folder with unreadable DICOM files or a series with uneven slice positions.

    Args:
        folder: the DICOM folder.
        files_in_series: every file GDCM sorted into some series of the folder.
        series_files: the files of the series being read, in slice order.
        positions: each of those files' ImagePositionPatient (``"x\\\\y\\\\z"``), None if absent.
        slice_normal: the image's third direction column (unit vector along the slices).

    Raises:
        ImageReadError: naming the unreadable files, or the slices around the gap.
    """
    known = {os.path.realpath(f) for f in files_in_series}
    lost = [p.name for p in sorted(folder.iterdir())
            if p.is_file() and os.path.realpath(p) not in known and _looks_like_dicom(p)]
    if lost:
        raise ImageReadError(
            f"The DICOM folder '{folder}' holds {len(lost)} file(s) that could not be read as part of a series: "
            f"{', '.join(lost[:5])}{' ...' if len(lost) > 5 else ''}. They may be truncated or damaged; reading "
            "the series without them would change its slice spacing. Copy the series again, or move files that do "
            "not belong to it elsewhere."
        )
    if len(series_files) < 3 or any(p is None for p in positions):
        return
    offsets = np.array([float(np.dot([float(v) for v in str(p).split("\\")], slice_normal)) for p in positions])
    steps = np.diff(offsets)
    typical = float(np.median(np.abs(steps)))
    bad = np.flatnonzero(np.abs(np.abs(steps) - typical) > max(_SLICE_ABS_TOL, _SLICE_REL_TOL * typical))
    if bad.size:
        n = int(bad[0])
        raise ImageReadError(
            f"The DICOM series in '{folder}' has unevenly spaced slices: {Path(series_files[n]).name} and "
            f"{Path(series_files[n + 1]).name} are {abs(steps[n]):.3f} mm apart, whereas most slices are "
            f"{typical:.3f} mm apart ({bad.size} irregular gap(s)). A slice is probably missing or duplicated; "
            "a volume cannot be built on an even grid. Copy the complete series."
        )


def _looks_like_dicom(path: Path) -> bool:
    """A ``.dcm``/``.ima`` file, a file without extension, or one with the ``DICM`` marker at byte 128."""
    if path.suffix.lower() in (".dcm", ".ima", ".dicom") or not path.suffix:
        return not path.name.startswith(".")
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False
