"""``ctsam3d serve`` refuses bad arguments with one paragraph and exit code 2, before serving anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from CTSAM3DLib.cli.main import main


@pytest.mark.parametrize(("args", "message"), [
    (["missing.nii.gz"], "does not exist"),
    (["--port", "70000"], "--port"),
    (["--max-sessions", "0"], "must be positive"),
    (["--checkpoint", "nowhere.pt"], "does not exist"),
    (["--data-root", "no/such/folder"], "is not a folder"),
    (["--max-upload-gb", "0"], "must be positive"),
])
def test_bad_arguments_exit_2(args: list[str], message: str, capsys: pytest.CaptureFixture[str],
                              web_extra: None) -> None:
    assert main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctsam3d serve: error:") and message in err and "Traceback" not in err


def test_absent_cuda_is_refused(capsys: pytest.CaptureFixture[str], web_extra: None) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert main(["serve", "--device", "cuda"]) == 2
    assert "CUDA" in capsys.readouterr().err


def test_a_text_file_is_not_a_ct(tmp_path: Path, capsys: pytest.CaptureFixture[str], web_extra: None) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert main(["serve", str(notes)]) == 2
    assert "not a CT file" in capsys.readouterr().err
