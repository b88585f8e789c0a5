"""Property-based tests (Hypothesis): point parsers, ijk/LPS/RAS round trips, a corpus of corrupted images.

Example counts are small and derandomised, so the default run stays fast and repeatable.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from CTSAM3DLib.cli.main import main
from CTSAM3DLib.geometry import affine
from CTSAM3DLib.io.points import parse_point_arg, read_points_file
from CTSAM3DLib.io.readers import ImageReadError, read_image
from CTSAM3DLib.io.volume import Volume

FAST = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture])
COORD = st.floats(min_value=-1e4, max_value=1e4, allow_nan=False, allow_infinity=False)
SIGN = st.sampled_from(["", "+", "-", "pos", "neg", "1", "0"])


@FAST
@given(COORD, COORD, COORD, SIGN)
def test_point_argument_round_trips(x: float, y: float, z: float, sign: str) -> None:
    text = f"{x!r},{y!r},{z!r}" + (f",{sign}" if sign else "")
    point = parse_point_arg(text, "lps")
    assert point.position == (x, y, z) and point.frame == "lps"
    assert point.is_positive == (sign in ("", "+", "pos", "1"))


@FAST
@given(st.text(max_size=40))
def test_point_argument_refuses_garbage_with_value_error(text: str) -> None:
    try:
        point = parse_point_arg(text)
    except ValueError:
        return
    assert all(math.isfinite(v) for v in point.position)


@FAST
@given(st.lists(st.tuples(COORD, COORD, COORD, st.booleans()), min_size=1, max_size=8), st.booleans())
def test_points_csv_round_trips_with_and_without_header(tmp_path_factory: pytest.TempPathFactory,
                                                        rows: list[tuple[float, float, float, bool]],
                                                        header: bool) -> None:
    path = tmp_path_factory.mktemp("csv") / "points.csv"
    lines = (["x,y,z,label"] if header else []) + [f"{x!r},{y!r},{z!r},{'+' if p else '-'}" for x, y, z, p in rows]
    path.write_text("\n".join(lines) + "\n")
    points = read_points_file(path, default_frame="ijk")
    assert [(*p.position, p.is_positive) for p in points] == rows
    assert {p.frame for p in points} == {"ijk"}


@FAST
@given(st.binary(max_size=200), st.sampled_from([".csv", ".json", ".mrk.json", ".fcsv", ".txt"]))
def test_points_files_refuse_garbage_with_value_error(tmp_path_factory: pytest.TempPathFactory, data: bytes,
                                                      suffix: str) -> None:
    path = tmp_path_factory.mktemp("pts") / f"points{suffix}"
    path.write_bytes(data)
    try:
        points = read_points_file(path)
    except ValueError:  # UnicodeDecodeError and json errors are ValueErrors too
        return
    assert all(all(math.isfinite(v) for v in p.position) for p in points)


@st.composite
def geometries(draw: st.DrawFn) -> Volume:
    """Random oblique, flipped, anisotropic grids."""
    angles = draw(st.tuples(*[st.floats(-math.pi, math.pi)] * 3))
    flips = np.diag([draw(st.sampled_from([-1.0, 1.0])) for _ in range(3)])
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    spacing = draw(st.tuples(*[st.floats(0.05, 10.0)] * 3))
    origin = draw(st.tuples(*[st.floats(-500.0, 500.0)] * 3))
    return Volume(np.zeros((2, 2, 2), np.int16), np.array(spacing), np.array(origin), rx @ ry @ rz @ flips)


@FAST
@given(geometries(), st.lists(st.tuples(*[st.floats(-600.0, 600.0)] * 3), min_size=1, max_size=5))
def test_ijk_lps_ras_round_trips(volume: Volume, points: list[tuple[float, float, float]]) -> None:
    ijk = np.asarray(points)
    lps = affine.ijk_to_lps(volume, ijk)
    np.testing.assert_allclose(affine.lps_to_ijk(volume, lps), ijk, atol=1e-6)
    ras = affine.ijk_to_ras(volume, ijk)
    np.testing.assert_allclose(ras, affine.lps_to_ras(lps), atol=1e-9)
    np.testing.assert_allclose(affine.ras_to_ijk(volume, ras), ijk, atol=1e-6)
    np.testing.assert_allclose(affine.ras_to_lps(affine.lps_to_ras(lps)), lps, atol=0)
    image = sitk.Image(2, 2, 2, sitk.sitkInt16)
    image.SetSpacing(volume.spacing_mm.tolist())
    image.SetOrigin(volume.origin_lps.tolist())
    image.SetDirection(volume.direction.ravel().tolist())
    for p, world in zip(ijk, lps):
        np.testing.assert_allclose(image.TransformContinuousIndexToPhysicalPoint(p.tolist()), world, atol=1e-6)


# ---- corrupted image corpus -------------------------------------------------------------------
FORMATS = (".nii", ".nii.gz", ".nrrd", ".mha")
# Header text that fixes the voxel count, per format (NIfTI is binary: dim[1] at byte 42).
_SIZE_TEXT = {".nrrd": (b"sizes: 12 10 8", b"sizes: 12 10 9"), ".mha": (b"DimSize = 12 10 8", b"DimSize = 12 10 9")}


@pytest.fixture(scope="module")
def intact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Bytes of one small CT in each format (NIfTI gzip, NRRD and MHA compressed)."""
    folder = tmp_path_factory.mktemp("intact")
    rng = np.random.default_rng(0)
    image = sitk.GetImageFromArray(rng.integers(-1000, 1000, (8, 10, 12)).astype(np.int16))
    corpus = {}
    for suffix in FORMATS:
        path = folder / f"ct{suffix}"
        sitk.WriteImage(image, str(path), useCompression=suffix != ".nii")
        corpus[suffix] = path.read_bytes()
    return corpus


def _corrupt(data: bytes, suffix: str, kind: str, where: float, bit: int) -> bytes:
    if kind == "truncate":
        return data[: int(where * (len(data) - 1))]
    if kind == "grow":  # a header that promises more voxels than the file holds
        if suffix in _SIZE_TEXT:
            return data.replace(*_SIZE_TEXT[suffix])
        raw = bytearray(data if suffix == ".nii" else gzip.decompress(data))
        raw[42:44] = np.int16(13).tobytes()
        return bytes(raw) if suffix == ".nii" else gzip.compress(bytes(raw))
    # flip one bit of the compressed stream (gzip; zlib in .mha) or its checksums, not of free-form header
    # fields nor of the unused padding bits of the stream's last data byte
    if suffix == ".mha":
        body, trailer = data.index(b"LOCAL\n") + 6, 4
    else:
        body, trailer = (0 if suffix == ".nii.gz" else data.index(b"\x1f\x8b")) + 10, 8
    candidates = [*range(body, len(data) - trailer - 1), *range(len(data) - trailer, len(data))]
    position = candidates[int(where * (len(candidates) - 1))]
    out = bytearray(data)
    out[position] ^= 1 << bit
    return bytes(out)


@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(FORMATS), st.sampled_from(["truncate", "grow", "flip"]), st.floats(0.0, 0.98),
       st.integers(0, 7))
def test_corrupted_images_are_refused_by_the_reader_and_the_cli(
        tmp_path_factory: pytest.TempPathFactory, intact: dict[str, bytes], suffix: str, kind: str, where: float,
        bit: int) -> None:
    if kind == "flip" and suffix == ".nii":
        suffix = ".nii.gz"  # uncompressed voxels have no checksum: a flipped bit there is a valid image
    folder = tmp_path_factory.mktemp("bad")
    path = folder / f"ct{suffix}"
    path.write_bytes(_corrupt(intact[suffix], suffix, kind, where, bit))
    with pytest.raises(ImageReadError):
        read_image(path)
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["segment", str(path), "--point", "1,1,1", "--coords", "ijk", "--output",
                     str(folder / "mask.nii.gz")])
    assert code == 2 and "Traceback" not in err.getvalue() and str(path) in err.getvalue()
    assert not (folder / "mask.nii.gz").exists()


def test_intact_corpus_reads(intact: dict[str, bytes], tmp_path: Path) -> None:
    for suffix, data in intact.items():
        (tmp_path / f"ct{suffix}").write_bytes(data)
        assert read_image(tmp_path / f"ct{suffix}").GetSize() == (12, 10, 8)
