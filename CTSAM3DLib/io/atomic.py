"""Atomic file writes: the one way CTSAM3DLib writes a file.

Data goes to a hidden temporary file in the destination folder, which is then renamed onto
the destination in one step, so readers see either the old file or the complete new one,
never a half-written or 0-byte file. Without ``overwrite`` the rename is an exclusive
hard link: if another process created the destination in the meantime, the write fails
with ``FileExistsError`` instead of replacing that file. The file gets the mode an ordinary
``open`` would give (``0o666`` minus the umask). A failed or interrupted write removes its
temporary file; one left by a killed process (its name holds the process id) is removed by
the next write to the same destination.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

# Temporary files: ".<name>.<pid>-<random>.tmp<ext>" (ext keeps the format for SimpleITK/matplotlib).
_TMP_PATTERN = r"^\.{name}\.(\d+)-[0-9a-f]+\.tmp"


def umask_mode() -> int:
    """The mode ``open(path, "w")`` would give a new file (``0o666`` minus the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def temporary_name(path: Path) -> Path:
    """A fresh hidden temporary path beside ``path`` that keeps its extension (e.g. ``.nii.gz``)."""
    ext = "".join(path.suffixes[-2:]) if path.suffix.lower() in (".gz", ".bz2") else path.suffix
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{ext}")


def check_writable(path: str | Path, overwrite: bool = False) -> Path:
    """Refuse a destination early (before any computation).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False, or it is a folder.
        FileNotFoundError: the folder it would go into does not exist.
    """
    path = Path(path)
    if path.is_dir():
        raise FileExistsError(f"Cannot write '{path}': it is an existing folder; give a file name.")
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' already exists; pass --overwrite (Python: overwrite=True) to replace it, "
                              "or choose another name. Nothing was written.")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"Cannot write '{path}': folder '{path.parent}' does not exist.")
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it becomes ``path`` atomically.

    Args:
        path: the destination.
        overwrite: replace an existing ``path``; otherwise the destination is created
            exclusively (an existing file, even one created during the write, is kept).

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False (checked before and at the end).
        FileNotFoundError: the destination folder does not exist.
    """
    path = check_writable(path, overwrite)
    _remove_stale_temporaries(path)
    tmp = temporary_name(path)
    try:
        yield tmp
        if not tmp.is_file():
            raise FileNotFoundError(f"Writing '{path}' produced no file.")
        os.chmod(tmp, umask_mode())
        if overwrite:
            os.replace(tmp, path)
        else:
            _link_exclusive(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)


def atomic_write(path: str | Path, write: Callable[[Path], object], overwrite: bool = False) -> Path:
    """Call ``write(tmp_path)`` and move the result onto ``path`` atomically (see `atomic_path`)."""
    with atomic_path(path, overwrite) as tmp:
        write(tmp)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes, overwrite: bool = False) -> Path:
    """Write ``data`` to ``path`` atomically (see `atomic_path`)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), overwrite)


def atomic_write_text(path: str | Path, text: str, overwrite: bool = False) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically (see `atomic_path`)."""
    return atomic_write_bytes(path, text.encode("utf-8"), overwrite)


def _link_exclusive(tmp: Path, path: Path) -> None:
    """Give ``tmp``'s content the name ``path`` unless ``path`` exists (atomic test-and-set)."""
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise FileExistsError(f"'{path}' was created by someone else while this file was being written; it was "
                              "kept, and nothing was written. Pass --overwrite (Python: overwrite=True) to replace it."
                              ) from None
    except OSError as error:  # file systems without hard links: reserve the name exclusively, then replace
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK):
            raise
        try:
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        except FileExistsError:
            raise FileExistsError(f"'{path}' was created by someone else while this file was being written; it "
                                  "was kept, and nothing was written.") from None
        os.replace(tmp, path)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of ``path`` left by processes that no longer exist (killed mid-write)."""
    pattern = re.compile(_TMP_PATTERN.format(name=re.escape(path.name)))
    with contextlib.suppress(OSError):
        for entry in os.scandir(path.parent):
            match = pattern.match(entry.name)
            if match and not _process_alive(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(entry.path)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # on Windows os.kill(pid, 0) would end the process
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True
