"""``ctsam3d segment``: a progress line per click on a terminal's stderr, none in a log file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.cli.main import main


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _segment(tmp_path: Path, sphere_image: tuple[sitk.Image, np.ndarray]) -> list[str]:
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sphere_image[0], str(ct))
    out = tmp_path / f"mask{len(list(tmp_path.iterdir()))}.nii.gz"
    return ["segment", str(ct), "--point", "45,40,20", "--point", "46,40,20", "--coords", "ijk", "--max-patches", "3",
            "--output", str(out)]


def test_segment_shows_patch_progress_on_a_terminal(tmp_path: Path, sphere_image: tuple[sitk.Image, np.ndarray],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = _Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    assert main(_segment(tmp_path, sphere_image)) == 0
    shown = terminal.getvalue()
    assert "click 1/2" in shown and "click 2/2" in shown
    assert "1/1 [" in shown and "patch" in shown and "click ring 0" in shown


def test_segment_prints_no_progress_into_a_file(tmp_path: Path, sphere_image: tuple[sitk.Image, np.ndarray],
                                                capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_segment(tmp_path, sphere_image)) == 0
    assert "click 1/2" not in capsys.readouterr().err
