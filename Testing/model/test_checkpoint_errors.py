"""Damaged or inconsistent checkpoints give a CheckpointError naming the file, never a traceback."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from CTSAM3DLib import build_model, load_model
from CTSAM3DLib.model import checkpoint
from CTSAM3DLib.model.checkpoint import CheckpointError, atomic_torch_save, save_checkpoint


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    save_checkpoint(path, build_model("compact"), "compact", (-1000.0, 1000.0))
    return path


def _rewrite(saved: Path, tmp_path: Path, **changes: object) -> Path:
    payload = torch.load(saved, weights_only=True)
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    path = tmp_path / "edited.pt"
    torch.save(payload, path)
    return path


@pytest.mark.parametrize("key", ["window_hu", "variant"])
def test_missing_key_is_a_checkpoint_error(saved: Path, tmp_path: Path, key: str) -> None:
    with pytest.raises(CheckpointError, match=f"edited.pt lacks '{key}'"):
        load_model(_rewrite(saved, tmp_path, **{key: None}))


@pytest.mark.parametrize("window", [[1000.0, -1000.0], [float("nan"), 1.0], [0.0, float("inf")], [1.0], "wide"])
def test_unusable_stored_window_is_refused(saved: Path, tmp_path: Path, window: object) -> None:
    with pytest.raises(CheckpointError, match="edited.pt.*window"):
        load_model(_rewrite(saved, tmp_path, window_hu=window))


def test_unusable_window_argument_is_refused(saved: Path) -> None:
    with pytest.raises(CheckpointError, match="window_hu"):
        load_model(saved, window_hu=(5.0, -5.0))


@pytest.mark.parametrize("size", [0, 100, "half"])
def test_truncated_checkpoint_is_a_checkpoint_error(saved: Path, tmp_path: Path, size: object) -> None:
    data = saved.read_bytes()
    path = tmp_path / "cut.pt"
    path.write_bytes(data[: len(data) // 2] if size == "half" else data[: int(size)])  # type: ignore[call-overload]
    with pytest.raises(CheckpointError, match="cut.pt"):
        load_model(path)


def test_failed_save_keeps_the_previous_checkpoint_and_no_temporary(saved: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "model.pt"
    atomic_torch_save({"v": 1}, path)

    def broken_save(obj: object, f: str) -> None:
        Path(f).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint.torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"v": 2}, path)
    assert torch.load(path, weights_only=True) == {"v": 1}
    assert os.listdir(tmp_path) == ["model.pt"]
