"""``ctsam3d train`` under damaged runs and data: one-paragraph errors naming the file, nothing left behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.cli.main import main
from CTSAM3DLib.train.trainer import _read_metrics, load_train_state

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "compact_cpu.yaml"


def _train(data: Path, out: Path, *extra: str) -> int:
    return main(["train", "--config", str(CONFIG), "--data", str(data), "--output", str(out), "--max-steps", "1",
                 "--no-progress", *extra])


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 cut"])
def test_resume_from_an_empty_or_truncated_state_names_the_file(tmp_path: Path, content: bytes,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / "train_state.pt").write_bytes(content)
    assert _train(tmp_path, out, "--resume") == 2
    err = capsys.readouterr().err
    assert "train_state.pt" in err and "truncated" in err and "Traceback" not in err
    with pytest.raises(ValueError, match="train_state.pt"):
        load_train_state(out / "train_state.pt")


def test_metrics_with_a_cut_off_last_line_are_read_and_a_bad_middle_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + json.dumps({"step": 2}) + "\n" + '{"step": 3, "lo')
    assert [record["step"] for _, record in _read_metrics(path)] == [1, 2]
    path.write_text(json.dumps({"step": 1}) + "\n" + "garbage\n" + json.dumps({"step": 2}) + "\n")
    with pytest.raises(ValueError, match=r"metrics.jsonl line 2"):
        _read_metrics(path)


def test_unusable_data_lists_its_issues_in_data_issues_txt(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    subject = tmp_path / "data" / "s01"
    (subject / "segmentations").mkdir(parents=True)
    image = sitk.GetImageFromArray(np.random.default_rng(0).integers(-1000, 1000, (20, 20, 20)).astype(np.int16))
    sitk.WriteImage(image, str(subject / "ct.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(np.ones((20, 20, 20), np.uint8)), str(subject / "segmentations" / "liver.nii.gz"))
    ct = subject / "ct.nii.gz"
    ct.write_bytes(ct.read_bytes()[:-2000])  # truncated: the only subject cannot be read
    out = tmp_path / "run"
    assert _train(tmp_path / "data", out) == 2
    err = capsys.readouterr().err
    issues = out / "data_issues.txt"
    assert str(issues) in err and "Traceback" not in err
    assert "s01" in issues.read_text() and "ct.nii.gz" in issues.read_text()


def test_a_run_that_fails_before_writing_anything_leaves_no_folder(tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _train(tmp_path / "no_such_data", out) == 2
    assert not out.exists()
