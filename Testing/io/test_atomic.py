"""CTSAM3DLib.io.atomic and the writers built on it: no half files, no lost files, umask respected."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.io.atomic import atomic_path, atomic_write_bytes, atomic_write_text, temporary_name
from CTSAM3DLib.io.readers import write_mask
from CTSAM3DLib.model.checkpoint import atomic_torch_save


def _reference() -> sitk.Image:
    image = sitk.Image(8, 7, 6, sitk.sitkInt16)
    image.SetSpacing((1.0, 1.5, 2.0))
    return image


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(path, overwrite=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_exclusive_creation_keeps_a_file_created_during_the_write(tmp_path: Path) -> None:
    path = tmp_path / "mask.nii.gz"
    with pytest.raises(FileExistsError, match="created by someone else"), atomic_path(path) as tmp:
        tmp.write_bytes(b"mine")
        path.write_bytes(b"theirs")  # another process wins the race
    assert path.read_bytes() == b"theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz"]


def test_concurrent_mask_writes_without_overwrite_one_wins_one_fails(tmp_path: Path) -> None:
    path = tmp_path / "mask.nii.gz"
    reference = _reference()
    masks = [np.zeros((6, 7, 8), np.uint8), np.ones((6, 7, 8), np.uint8)]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def write(mask: np.ndarray) -> None:
        barrier.wait()
        try:
            write_mask(mask, reference, path)
            outcomes.append("ok")
        except FileExistsError:
            outcomes.append("refused")

    for _ in range(5):
        path.unlink(missing_ok=True)
        outcomes.clear()
        threads = [threading.Thread(target=write, args=(m,)) for m in masks]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes) == ["ok", "refused"]
    assert [p.name for p in tmp_path.iterdir()] == ["mask.nii.gz"]


def test_files_get_the_umask_mode(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.md", "x")
        atomic_torch_save({"a": 1}, tmp_path / "b.pt")
        write_mask(np.zeros((6, 7, 8), np.uint8), _reference(), tmp_path / "c.seg.nrrd")
    finally:
        os.umask(old)
    for name in ("a.md", "b.pt", "c.seg.nrrd"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o644, name


def test_temporary_keeps_the_format_extension() -> None:
    assert temporary_name(Path("/x/mask.nii.gz")).name.endswith(".tmp.nii.gz")
    assert temporary_name(Path("/x/seg.seg.nrrd")).name.endswith(".tmp.nrrd")
    assert temporary_name(Path("/x/model.pt")).name.startswith(".model.pt.")


def test_stale_temporary_of_a_killed_writer_is_removed(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = tmp_path / f".model.pt.{int(dead.stdout)}-deadbeef.tmp.pt"
    stale.write_bytes(b"half a checkpoint")
    live = tmp_path / f".model.pt.{os.getpid()}-cafe.tmp.pt"
    live.write_bytes(b"being written by us")
    atomic_write_bytes(tmp_path / "model.pt", b"new", overwrite=True)
    assert not stale.exists() and live.exists()


def test_sigterm_during_a_checkpoint_save_keeps_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    atomic_torch_save({"version": 1}, path)
    before = path.read_bytes()
    script = (
        "import time, torch\n"
        "from pathlib import Path\n"
        "from CTSAM3DLib.cli.main import _sigterm_as_exit\n"
        "from CTSAM3DLib.model import checkpoint\n"
        "def slow_save(obj, f):\n"
        "    Path(f).write_bytes(b'partial'); print('writing', flush=True); time.sleep(30)\n"
        "checkpoint.torch.save = slow_save\n"
        "with _sigterm_as_exit():\n"
        f"    checkpoint.atomic_torch_save({{'version': 2}}, Path({str(path)!r}))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]


def test_mask_is_never_visible_half_written(tmp_path: Path) -> None:
    path = tmp_path / "mask.nii.gz"
    reference = sitk.Image(64, 64, 64, sitk.sitkInt16)
    mask = np.random.default_rng(0).integers(0, 2, (64, 64, 64)).astype(np.uint8)
    write_mask(mask, reference, path)
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(path.stat().st_size)
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        for _ in range(5):
            write_mask(1 - mask, reference, path, overwrite=True)
    finally:
        stop.set()
        watcher.join()
    assert seen and min(seen) > 1000
