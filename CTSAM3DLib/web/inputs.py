"""Where a CT comes from in the web app: a path on the server, or uploaded files (one image or a zipped DICOM folder).

Uploads land in the tab's own temporary folder; zip members are extracted only inside it (no absolute paths,
no ``..``, a size cap), so an upload can never write elsewhere on the server.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

# Largest total size (bytes) a zipped DICOM folder may expand to.
MAX_UNZIPPED_BYTES = 4 << 30
# Image file endings Slicer's volume reader opens directly (a DICOM series comes as a folder or a zip).
IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def volume_files(path: str | Path) -> list[str]:
    """Files to hand to Slicer's volume reader for ``path``: an image file, or every file of a DICOM folder or zip.

    Raises:
        ValueError: the path does not exist, is of an unknown kind, or holds no files.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
        if not files:
            raise ValueError(f"The folder {path} holds no files; give a CT file or a DICOM folder.")
        return files
    if not path.is_file():
        raise ValueError(f"{path} does not exist on the server.")
    if path.name.lower().endswith(".zip"):
        return volume_files(unzip(path, path.with_name(path.name[:-4] + "_unzipped")))
    if not path.name.lower().endswith(IMAGE_SUFFIXES):
        raise ValueError(f"{path.name} is not a CT file CTSAM3D opens: use NIfTI (.nii, .nii.gz), NRRD (.nrrd, .nhdr), "
                         "MetaImage (.mha, .mhd), a DICOM folder, or a zipped DICOM folder (.zip).")
    return [str(path)]


def unzip(archive: str | Path, folder: str | Path) -> Path:
    """Extract a zip into ``folder`` (created), refusing members that would land outside it or a bomb.

    Raises:
        ValueError: not a zip file, an unsafe member name, or more than ``MAX_UNZIPPED_BYTES``.
    """
    folder = Path(folder)
    try:
        with zipfile.ZipFile(archive) as zipped:
            members = [m for m in zipped.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > MAX_UNZIPPED_BYTES:
                raise ValueError(f"{Path(archive).name} expands to more than {MAX_UNZIPPED_BYTES >> 30} GiB.")
            for member in members:
                parts = PurePosixPath(member.filename.replace("\\", "/")).parts
                if not parts or parts[0] == "/" or ".." in parts or ":" in parts[0]:
                    raise ValueError(f"{Path(archive).name} holds an unsafe member name {member.filename!r}.")
                target = folder.joinpath(*parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                with zipped.open(member) as source, open(target, "wb") as sink:
                    while chunk := source.read(1 << 20):
                        sink.write(chunk)
    except zipfile.BadZipFile as exc:
        raise ValueError(f"{Path(archive).name} is not a readable zip file ({exc}).") from exc
    return folder


def save_uploads(uploads: Sequence[dict], folder: str | Path) -> Path:
    """Write browser uploads (trame file dicts: name, content) into ``folder``; returns what to open.

    One file: that file (a zip is opened as a DICOM folder); several files: the folder (a DICOM series).

    Raises:
        ValueError: nothing was uploaded, or a file has no content.
    """
    from trame.app.file_upload import ClientFile

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for upload in uploads:
        client_file = ClientFile(upload)
        if client_file.is_empty:
            raise ValueError(f"The upload of {client_file.name!r} arrived without content; try again.")
        target = folder / Path(str(client_file.name)).name  # never a path from the browser
        target.write_bytes(client_file.content)
        written.append(target)
    if not written:
        raise ValueError("No file was uploaded.")
    return written[0] if len(written) == 1 else folder
