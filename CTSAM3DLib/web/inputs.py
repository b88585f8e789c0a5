"""Where a CT comes from in the web app, and what a tab may read: server paths, uploads, zipped DICOM folders.

Everything a tab reads goes through a ``DataAccess``: a typed server path is resolved (``~``, ``..`` and
symlinks) before it is checked, and must lie in a ``--data-root`` folder, be the image given on the command
line, or lie in the tab's own folder (its uploads). A folder is walked without following links, every file
is checked after resolving, and at most ``MAX_FOLDER_FILES`` are taken. Detached headers (``.nhdr``, ``.mhd``,
a ``.nrrd`` with ``data file:``) must name data inside the same allowed area, so a header cannot make the
reader open a file elsewhere. A zip is extracted into a fresh folder inside the tab's folder, never beside the
archive; absolute names (``/``, ``//``, ``\\``, ``C:``), ``..``, symlink members, duplicate names, more than
``MAX_ZIP_MEMBERS`` members and more than ``MAX_UNZIPPED_BYTES`` are refused, and every target is checked to
resolve inside that folder.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import shutil
import stat
import tempfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

# Largest total size (bytes) a zipped DICOM folder may expand to.
MAX_UNZIPPED_BYTES = 4 << 30
# Most members a zip may hold and most entries (files and folders) walked in one folder (a DICOM series has
# hundreds to thousands of files).
MAX_ZIP_MEMBERS = 10_000
MAX_FOLDER_FILES = 10_000
# Most voxels a single CT file may declare (512 x 512 x 4096): a small compressed file cannot expand to fill memory.
MAX_VOXELS = 1 << 30
# Image file endings Slicer's volume reader opens directly (a DICOM series comes as a folder or a zip).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")
# Endings kept whole when an upload's name is made unique ("ct.nii.gz" -> "ct-2.nii.gz").
_KNOWN_SUFFIXES = (".nii.gz", ".seg.nrrd", *IMAGE_SUFFIXES, ".zip", ".dcm")
# Header formats whose voxel data may sit in another file, and how many header bytes are searched for it.
_HEADER_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
_HEADER_BYTES = 1 << 16
# Characters kept in an uploaded file's name; others become "_".
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._ +-]")
_UNKNOWN_KIND = ("is not a CT file CTSAM3D opens: use NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), MetaImage "
                 "(.mha, .mhd), a DICOM folder, or a zipped DICOM folder (.zip).")


@dataclass(frozen=True)
class DataAccess:
    """The server paths one tab may read, and its own folder (uploads, extracted zips).

    Build it with ``DataAccess.create``; ``unrestricted`` (library use without a server, e.g. tests) lets any
    readable path in but still extracts zips into ``scratch``. ``excluded`` folders (the other tabs' folders)
    stay closed even inside a root.
    """

    scratch: Path
    roots: tuple[Path, ...] = ()
    files: tuple[Path, ...] = ()
    excluded: tuple[Path, ...] = ()
    unrestricted: bool = False

    @classmethod
    def create(cls, scratch: str | Path, roots: Iterable[str | Path] = (), files: Iterable[str | Path] = (),
               excluded: Iterable[str | Path] = (), unrestricted: bool = False) -> DataAccess:
        """Resolve (symlinks followed) the tab's folder, the roots, the allowed files and the data files their
        headers name (an ``.mhd`` given on the command line brings its ``.raw``)."""
        scratch = Path(scratch)
        scratch.mkdir(parents=True, exist_ok=True)
        root_paths = [Path(r).expanduser().resolve() for r in roots]
        file_paths = [Path(f).expanduser().resolve() for f in files]
        for header in [f for f in file_paths if f.is_file() and f.name.lower().endswith(_HEADER_SUFFIXES)]:
            for name in data_file_names(header):
                target = (header.parent / name).resolve()
                (root_paths if target.is_dir() else file_paths).append(target)
        return cls(scratch.resolve(), tuple(root_paths), tuple(file_paths),
                   tuple(Path(e).expanduser().resolve() for e in excluded), unrestricted)

    def allows(self, resolved: Path) -> bool:
        """Whether an already resolved path may be read."""
        if self.unrestricted or resolved.is_relative_to(self.scratch):
            return True
        if any(resolved.is_relative_to(folder) for folder in self.excluded):
            return False
        return resolved in self.files or any(resolved.is_relative_to(root) for root in self.roots)

    def resolve(self, text: str | Path) -> Path:
        """The resolved path for a path typed in the page (ValueError if outside what this tab may read).

        The same message is given whether or not an outside path exists, so the page cannot probe the disk.
        """
        given = Path(str(text).strip()).expanduser()
        if not str(text).strip():
            raise ValueError("Type the path of a CT on the server first.")
        if not given.is_absolute() and not self.unrestricted:
            raise ValueError(f"{text} is not an absolute path; give the full path of the CT on the server.")
        try:
            resolved = given.resolve()
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
            resolved = None
        if resolved is None or not self.allows(resolved):
            raise ValueError(f"{text} is outside the folders this server opens. The server's operator can add "
                             "folders with `ctsam3d serve --data-root DIR`; or upload the CT.")
        if not resolved.exists():
            raise ValueError(f"{text} does not exist on the server.")
        return resolved

    @contextlib.contextmanager
    def volume_files(self, text: str | Path) -> Iterator[list[str]]:
        """Files to hand to Slicer's reader for a path: an image file, or the files of a DICOM folder or zip.

        A zip is extracted into a fresh folder inside the tab's folder, removed when the block ends (the
        reader has copied the voxels by then).

        Raises:
            ValueError: outside what the tab may read, missing, of an unknown kind, empty, or unsafe.
        """
        path = self.resolve(text)
        if path.is_dir():
            yield self._folder_files(path)
            return
        if path.name.lower().endswith(".zip"):
            folder = Path(tempfile.mkdtemp(prefix="unzipped-", dir=self.scratch))
            try:
                unzip(path, folder)
                yield self._folder_files(folder)
            finally:
                shutil.rmtree(folder, ignore_errors=True)
            return
        if not path.name.lower().endswith(IMAGE_SUFFIXES):
            raise ValueError(f"{path.name} {_UNKNOWN_KIND}")
        self._check_data_files(path)
        yield [str(path)]

    def _folder_files(self, folder: Path) -> list[str]:
        files: list[str] = []
        seen = 0
        for parent, dirs, names in os.walk(folder):  # symlinked folders are listed, never entered
            seen += len(dirs) + len(names)
            if seen > MAX_FOLDER_FILES:
                raise ValueError(f"{folder} holds more than {MAX_FOLDER_FILES} files and folders; give the folder "
                                 "of one DICOM series.")
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(n for n in names if not n.startswith(".")):
                path = Path(parent) / name
                if not self.allows(path.resolve()):
                    raise ValueError(f"{path} links outside the folders this server opens; it was not read.")
                if path.is_file():
                    self._check_data_files(path)
                    files.append(str(path))
        if not files:
            raise ValueError(f"The folder {folder.name} holds no files; give a CT file or a DICOM folder.")
        return files

    def _check_data_files(self, header: Path) -> None:
        """Refuse a header whose voxel data file lies outside what the tab may read."""
        if not header.name.lower().endswith(_HEADER_SUFFIXES):
            return
        for name in data_file_names(header):
            target = (header.parent / name).resolve()
            if not self.allows(target):
                raise ValueError(f"{header.name} names its voxel data file {name!r}, outside the folders this "
                                 "server opens; it was not read.")


def data_file_names(header: Path) -> list[str]:
    """The files (relative to the header's folder) a NRRD or MetaImage header takes its voxels from.

    A file-name pattern (``slice%03d.raw 1 10 1``) gives its folder; ``LOCAL`` / an attached NRRD gives none.
    """
    with open(header, "rb") as f:
        lines = f.read(_HEADER_BYTES).decode("latin-1").splitlines()
    is_nrrd = header.name.lower().endswith((".nrrd", ".nhdr"))
    for index, line in enumerate(lines):
        if is_nrrd and not line.strip():
            return []  # the end of a NRRD header: the data is attached
        key, separator, value = line.partition(":" if is_nrrd else "=")
        key = key.strip().lower().replace(" ", "")
        if not separator or key not in ("datafile", "elementdatafile"):
            continue
        value = value.strip()
        if value.upper().startswith("LIST"):
            return [n.strip() for n in lines[index + 1:] if n.strip()]
        if value.upper() == "LOCAL":
            return []
        first = value.split()[0] if value.split() else value
        return [str(Path(first).parent)] if "%" in first else [value]
    return []


def unzip(archive: str | Path, folder: str | Path) -> Path:
    """Extract a zip into the empty ``folder``, refusing any member that could land outside it, and bombs.

    Raises:
        ValueError: not a zip file, an unsafe or duplicate member, too many members, or too many bytes.
    """
    folder, name = Path(folder).resolve(), Path(archive).name
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = zipped.infolist()
            if len(members) > MAX_ZIP_MEMBERS:
                raise ValueError(f"{name} holds {len(members)} members, more than the {MAX_ZIP_MEMBERS} allowed.")
            if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
                raise ValueError(f"{name} expands to more than {MAX_UNZIPPED_BYTES >> 30} GiB.")
            for member in members:
                target = _member_target(member, folder, name)
                if target is None:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    sink = open(target, "xb")  # noqa: SIM115 - a second member of the same name is refused
                except FileExistsError:
                    raise ValueError(f"{name} holds the member {member.filename!r} twice.") from None
                with zipped.open(member) as source, sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{name} is not a readable zip file ({exc}).") from exc
    except (NotImplementedError, RuntimeError) as exc:  # unsupported compression, encrypted members
        raise ValueError(f"{name} cannot be extracted here ({exc}).") from exc
    return folder


def _member_target(member: zipfile.ZipInfo, folder: Path, archive_name: str) -> Path | None:
    """Where a member goes inside ``folder`` (None for a folder entry); ValueError for an unsafe member."""
    raw = member.filename
    text = raw.replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    is_link = stat.S_ISLNK(member.external_attr >> 16)
    if (text.startswith("/") or re.match(r"^[A-Za-z]:", text) or ".." in parts or is_link
            or (not parts and not member.is_dir())):
        raise ValueError(f"{archive_name} holds an unsafe member {raw!r} (absolute, '..', or a link); "
                         "nothing from it was opened.")
    if member.is_dir() or not parts:
        return None
    target = folder.joinpath(*parts)
    if not target.resolve().is_relative_to(folder):
        raise ValueError(f"{archive_name} holds an unsafe member {raw!r}; nothing from it was opened.")
    return target


def upload_name(name: str) -> str:
    """A safe file name for an uploaded file: the browser's base name, unsafe characters replaced, no dot first."""
    base = _UNSAFE_NAME.sub("_", str(name).replace("\\", "/").rsplit("/", 1)[-1]).lstrip(". ")[:150]
    return base or "upload"


def unique_names(name: str) -> Iterator[str]:
    """``name``, then ``name-2``, ``name-3``, ... (the ending such as ``.nii.gz`` kept whole)."""
    suffix = next((s for s in _KNOWN_SUFFIXES if name.lower().endswith(s) and len(name) > len(s)), Path(name).suffix)
    stem = name[:len(name) - len(suffix)] if suffix else name
    yield name
    for number in range(2, MAX_FOLDER_FILES + 2):
        yield f"{stem}-{number}{suffix}"


def upload_target(folder: Path) -> Path:
    """What to open for an upload folder: its one file, its one image (a ``.mhd`` with its ``.raw``), or the
    folder (a DICOM series' files)."""
    files = [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    if not files:
        raise ValueError("No file was uploaded.")
    images = [p for p in files if p.name.lower().endswith(IMAGE_SUFFIXES)]
    return files[0] if len(files) == 1 else images[0] if len(images) == 1 else folder


def check_image_file(path: str | Path) -> None:
    """Refuse a single image file before Slicer decodes it: no image header, not 3-D scalar, or a damaged payload.

    Reads the header and scans the voxel payload as a stream (truncation, gzip/zlib checksums, NaN in a
    NIfTI), the library's checks; nothing is decoded into an image here, so the file is decoded only once.

    Raises:
        ValueError: naming the file and the problem.
    """
    import SimpleITK as sitk

    from CTSAM3DLib.io.integrity import check_compressed_payload, check_nifti_payload

    path = Path(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ValueError(f"{path.name} is not an image CTSAM3D can read, or it is damaged.") from None
    size = reader.GetSize()
    if reader.GetNumberOfComponents() > 1 or len(size) > 4 or (len(size) == 4 and size[3] != 1):
        raise ValueError(f"{path.name} is not one 3-D scalar volume (size {list(size)}, "
                         f"{reader.GetNumberOfComponents()} components per voxel); CTSAM3D needs a CT.")
    if math.prod(size) > MAX_VOXELS:
        raise ValueError(f"{path.name} declares {math.prod(size):,} voxels (size {list(size)}), more than the "
                         f"{MAX_VOXELS:,} a CT here may have.")
    check_nifti_payload(path)
    check_compressed_payload(path)


def check_image_kind(path: str | Path) -> None:
    """Refuse, before serving, an image path that is missing or of an unknown kind (nothing is read)."""
    path = Path(path).expanduser()
    if path.is_dir():
        return
    if not path.is_file():
        raise ValueError(f"{path} does not exist on the server.")
    if not path.name.lower().endswith((*IMAGE_SUFFIXES, ".zip")):
        raise ValueError(f"{path.name} {_UNKNOWN_KIND}")
