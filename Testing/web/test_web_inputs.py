"""``web.inputs`` as an attacker would use it: zip-slip members, paths out of the data roots, links, headers that
name a data file elsewhere, too many files, upload names. Every refusal is a ValueError with a clear message,
and nothing is written outside the tab's folder. Pure Python: no Slicer, no server.
"""

from __future__ import annotations

import os
import stat
import zipfile
from pathlib import Path

import pytest

from CTSAM3DLib.web import inputs


@pytest.fixture()
def area(tmp_path: Path) -> dict[str, Path]:
    """A tab folder, a data root with one CT, a secret file outside both, and the sessions folder around the tab."""
    sessions, data, outside = tmp_path / "sessions", tmp_path / "data", tmp_path / "outside"
    for folder in (sessions / "tab", sessions / "other-tab", data, outside):
        folder.mkdir(parents=True)
    (data / "ct.nii.gz").write_bytes(b"ct")
    (outside / "secret.nii.gz").write_bytes(b"secret")
    (sessions / "other-tab" / "their.nii.gz").write_bytes(b"theirs")
    return {"tab": sessions / "tab", "sessions": sessions, "data": data, "outside": outside, "root": tmp_path}


def _access(area: dict[str, Path]) -> inputs.DataAccess:
    return inputs.DataAccess.create(area["tab"], [area["data"]], excluded=[area["sessions"]])


def _zip(path: Path, members: list[tuple[str, bytes]], link: str = "") -> Path:
    with zipfile.ZipFile(path, "w") as zipped:
        for name, data in members:
            zipped.writestr(name, data)
        if link:
            info = zipfile.ZipInfo("dicom/link.dcm")
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zipped.writestr(info, link)
    return path


def _open(access: inputs.DataAccess, path: str | Path) -> list[str]:
    with access.volume_files(path) as files:
        return files


def _written(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("member", [
    "../outside/pwned.dcm", "//tmp/ctsam3d-zip-slip/pwned.dcm", "/etc/pwned.dcm", "\\\\server\\share\\pwned.dcm",
    "..\\..\\pwned.dcm", "dicom/../../pwned.dcm", "C:/pwned.dcm", "C:\\pwned.dcm",
])
def test_zip_slip_members_are_refused(area: dict[str, Path], member: str) -> None:
    archive = _zip(area["data"] / "evil.zip", [("dicom/a.dcm", b"a"), (member, b"pwned")])
    before = _written(area["root"])
    with pytest.raises(ValueError, match="unsafe member"):
        _open(_access(area), archive)
    assert _written(area["root"]) == before  # the extraction folder is gone too
    assert not Path("/tmp/ctsam3d-zip-slip").exists()


def test_symlink_duplicate_and_bomb_zips_are_refused(area: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    access, before = _access(area), _written(area["root"])
    cases = {"unsafe member": _zip(area["data"] / "link.zip", [("dicom/a.dcm", b"a")], link="/etc/passwd"),
             "twice": _zip(area["data"] / "twice.zip", [("dicom/a.dcm", b"a"), ("dicom\\a.dcm", b"b")]),
             "members": _zip(area["data"] / "many.zip", [(f"dicom/{i}.dcm", b"x") for i in range(6)]),
             "expands to more": _zip(area["data"] / "bomb.zip", [("dicom/a.dcm", b"\0" * 4096)]),
             "not a readable zip": area["data"] / "broken.zip"}
    cases["not a readable zip"].write_bytes(b"PK\x03\x04 not really")
    monkeypatch.setattr(inputs, "MAX_ZIP_MEMBERS", 5)
    monkeypatch.setattr(inputs, "MAX_UNZIPPED_BYTES", 1024)
    before |= {str(p.relative_to(area["root"])) for p in cases.values()}
    for message, archive in cases.items():
        with pytest.raises(ValueError, match=message):
            _open(access, archive)
    assert _written(area["root"]) == before


def test_a_safe_zip_extracts_into_the_tab_folder_only(area: dict[str, Path]) -> None:
    archive = _zip(area["data"] / "series.zip", [("./dicom/a.dcm", b"a"), ("dicom\\b.dcm", b"b"), ("dicom/", b"")])
    access = _access(area)
    with access.volume_files(archive) as files:
        assert [Path(f).name for f in files] == ["a.dcm", "b.dcm"]
        assert all(Path(f).is_relative_to(area["tab"]) for f in files)
    assert not list(area["tab"].iterdir()) and sorted(p.name for p in area["data"].iterdir()) == ["ct.nii.gz",
                                                                                                  "series.zip"]


def test_server_paths_outside_the_roots_are_refused(area: dict[str, Path]) -> None:
    access = _access(area)
    (area["data"] / "link.nii.gz").symlink_to(area["outside"] / "secret.nii.gz")
    (area["data"] / "dir-link").symlink_to(area["outside"])
    (area["data"] / "loop").symlink_to(area["data"] / "loop")
    for path in ("/", "/etc/passwd", area["outside"] / "secret.nii.gz", area["outside"] / "missing.nii.gz",
                 area["data"] / ".." / "outside" / "secret.nii.gz", area["data"] / "link.nii.gz",
                 area["data"] / "dir-link" / "secret.nii.gz", area["data"] / "loop",
                 area["sessions"] / "other-tab" / "their.nii.gz", area["sessions"]):
        with pytest.raises(ValueError, match="outside the folders this server opens"):
            _open(access, path)
    with pytest.raises(ValueError, match="absolute path"):
        _open(access, "data/ct.nii.gz")
    with pytest.raises(ValueError, match="does not exist"):
        _open(access, area["data"] / "missing.nii.gz")
    assert _open(access, area["data"] / "ct.nii.gz") == [str(area["data"] / "ct.nii.gz")]


def test_no_data_root_opens_only_the_given_image(area: dict[str, Path]) -> None:
    access = inputs.DataAccess.create(area["tab"], files=[area["data"] / "ct.nii.gz"], excluded=[area["sessions"]])
    assert _open(access, area["data"] / "ct.nii.gz")
    (area["data"] / "next.nii.gz").write_bytes(b"x")
    for path in (area["data"] / "next.nii.gz", area["data"]):
        with pytest.raises(ValueError, match="outside"):
            _open(access, path)
    (area["tab"] / "upload.nii.gz").write_bytes(b"x")  # the tab's own folder is always readable
    assert _open(access, area["tab"] / "upload.nii.gz")


def test_folders_are_walked_without_links_out_and_within_a_file_cap(area: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    series = area["data"] / "series"
    series.mkdir()
    for i in range(3):
        (series / f"{i}.dcm").write_bytes(b"x")
    (series / ".hidden").write_bytes(b"x")
    access = _access(area)
    assert [Path(f).name for f in _open(access, series)] == ["0.dcm", "1.dcm", "2.dcm"]
    (series / "sub").symlink_to(area["outside"], target_is_directory=True)  # listed, never entered
    assert len(_open(access, series)) == 3
    monkeypatch.setattr(inputs, "MAX_FOLDER_FILES", 2)
    with pytest.raises(ValueError, match="more than 2 files"):
        _open(access, series)
    monkeypatch.setattr(inputs, "MAX_FOLDER_FILES", 100)
    (series / "3.dcm").symlink_to(area["outside"] / "secret.nii.gz")
    with pytest.raises(ValueError, match="links outside"):
        _open(access, series)


@pytest.mark.parametrize(("name", "header"), [
    ("ct.mhd", "NDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = {target}\n"),
    ("ct.mhd", "NDims = 3\nDimSize = 2 2 2\nElementType = MET_SHORT\nElementDataFile = LIST\n{target}\n"),
    ("ct.nhdr", "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndata file: {target}\n"),
    ("ct.nrrd", "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\ndatafile: {target}\n\n"),
    ("ct.nhdr", "NRRD0004\ntype: short\ndimension: 3\nsizes: 2 2 2\nencoding: raw\n"
                "data file: {target_dir}/slice%03d.raw 1 2 1\n"),
])
def test_headers_naming_data_elsewhere_are_refused(area: dict[str, Path], name: str, header: str) -> None:
    secret = area["outside"] / "secret.nii.gz"
    for target in (str(secret), os.path.relpath(secret, area["tab"])):
        (area["tab"] / name).write_text(header.format(target=target, target_dir=Path(target).parent))
        with pytest.raises(ValueError, match="voxel data file"):
            _open(_access(area), area["tab"] / name)
    (area["tab"] / name).write_text(header.format(target="ct.raw", target_dir="."))
    assert _open(_access(area), area["tab"] / name) == [str((area["tab"] / name).resolve())]


def test_an_mhd_given_on_the_command_line_brings_its_data_file(area: dict[str, Path]) -> None:
    header = area["outside"] / "ct.mhd"
    header.write_text("NDims = 3\nElementDataFile = ct.raw\n")
    (area["outside"] / "ct.raw").write_bytes(b"\0" * 16)
    access = inputs.DataAccess.create(area["tab"], files=[header])
    assert _open(access, header) == [str(header)]
    with pytest.raises(ValueError, match="outside"):
        _open(access, area["outside"] / "secret.nii.gz")


def test_upload_names_are_safe_and_never_collide() -> None:
    assert [inputs.upload_name(n) for n in ("../../etc/passwd", "..", ".bashrc", "C:\\x\\ct.nii.gz", "a b$.nrrd", "")] \
        == ["passwd", "upload", "bashrc", "ct.nii.gz", "a b_.nrrd", "upload"]
    names = inputs.unique_names("ct.nii.gz")
    assert [next(names) for _ in range(3)] == ["ct.nii.gz", "ct-2.nii.gz", "ct-3.nii.gz"]
    assert next(iter(inputs.unique_names("noext"))) == "noext"


def test_a_header_inside_a_folder_is_checked_too(area: dict[str, Path]) -> None:
    series = area["data"] / "series"
    series.mkdir()
    (series / "1.dcm").write_bytes(b"x")
    (series / "ct.nhdr").write_text(f"NRRD0004\ndata file: {area['outside'] / 'secret.nii.gz'}\n")
    with pytest.raises(ValueError, match="voxel data file"):
        _open(_access(area), series)
    with pytest.raises(ValueError, match="outside"):
        _open(_access(area), str(area["data"]) + "/\0ct.nii.gz")


def test_an_upload_of_a_header_and_its_data_opens_the_header(tmp_path: Path) -> None:
    (tmp_path / "ct.mhd").write_text("ElementDataFile = ct.raw\n")
    (tmp_path / "ct.raw").write_bytes(b"\0")
    assert inputs.upload_target(tmp_path) == tmp_path / "ct.mhd"
    (tmp_path / "ct.mhd").unlink()
    assert inputs.upload_target(tmp_path) == tmp_path / "ct.raw"
    (tmp_path / "2.raw").write_bytes(b"\0")
    assert inputs.upload_target(tmp_path) == tmp_path


def test_a_file_declaring_too_many_voxels_is_refused_before_reading(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import SimpleITK as sitk

    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 8, sitk.sitkInt16), str(path))
    inputs.check_image_file(path)
    monkeypatch.setattr(inputs, "MAX_VOXELS", 500)
    with pytest.raises(ValueError, match="declares 512 voxels"):
        inputs.check_image_file(path)
    path.write_bytes(b"\x1f\x8b not an image")
    with pytest.raises(ValueError, match="not an image"):
        inputs.check_image_file(path)
