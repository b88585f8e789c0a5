"""The command line under bad input: refusals before any computation, clear messages, fast help."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.cli import demo as cli_demo
from CTSAM3DLib.cli import evaluate as cli_evaluate
from CTSAM3DLib.cli.main import build_parser, main
from CTSAM3DLib.cli.segment import parse_depth
from CTSAM3DLib.eval.protocol import ClickRecord, EvalResult
from CTSAM3DLib.eval.report import write_report
from CTSAM3DLib.geometry import affine
from CTSAM3DLib.io.readers import sitk_geometry_matrix


@pytest.fixture()
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a command gets as far as loading a model."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model was loaded before the input was checked")

    from CTSAM3DLib import api

    monkeypatch.setattr(api, "load_model", refuse)  # segment imports it when it runs
    for module in (cli_demo, cli_evaluate):
        monkeypatch.setattr(module, "load_model", refuse)


@pytest.fixture()
def ct_file(tmp_path: Path, sphere_image: tuple[sitk.Image, np.ndarray]) -> Path:
    path = tmp_path / "ct.nii.gz"
    sitk.WriteImage(sphere_image[0], str(path))
    return path


def test_segment_help_does_not_import_torch() -> None:
    code = ("import sys\nfrom CTSAM3DLib.cli.main import main\n"
            "try:\n    main(['segment', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "--max-patches" in out and "TORCH False" in out


def test_help_and_version_do_not_import_torch() -> None:
    code = ("import sys\nfrom CTSAM3DLib.cli.main import main\n"
            "for argv in (['--help'], ['--version']):\n"
            "    try:\n        main(argv)\n    except SystemExit:\n        pass\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "segment" in out and "evaluate" in out and "demo" in out
    assert "ctsam3d 0." in out
    assert out.strip().endswith("TORCH False")


def test_verbose_is_accepted_after_the_subcommand() -> None:
    args = build_parser(["segment"]).parse_args(["segment", "ct.nii.gz", "--point", "1,2,3", "--output", "m.nii.gz",
                                                 "-v"])
    assert args.verbose is True


def test_help_texts_name_units_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["segment", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "mm" in text and "(default: cpu)" in text and "(default: 27)" in text and "README.md" in text


@pytest.mark.parametrize("window", ["nan,1", "-inf,inf", "0,nan", "5,-5"])
def test_unusable_windows_are_refused(window: str, ct_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(ct_file), "--point", "1,2,3", "--window", window, "--output", str(tmp_path / "m.nii.gz")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--output", "{tmp}/mask.png"], "not a 3-D image format"),
    (["--output", "{tmp}/mask.xyz"], "not a 3-D image format"),
    (["--output", "{tmp}/mask.nii.gz", "--max-patches", "0"], "max-patches must be at least 1"),
    (["--output", "{tmp}/mask.nii.gz", "--max-patches", "-5"], "max-patches must be at least 1"),
    (["--output", "{tmp}/missing/mask.nii.gz"], "does not exist"),
])
def test_segment_refuses_bad_options_before_any_computation(no_model: None, ct_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str], extra: list[str],
                                                            message: str) -> None:
    argv = ["segment", str(ct_file), "--point", "1,2,3", "--coords", "ijk"] + [a.format(tmp=tmp_path) for a in extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.nii.gz"]


def test_segment_accepts_negative_coordinates_and_reports_clicks_and_volume(
        ct_file: Path, tmp_path: Path, sphere_image: tuple[sitk.Image, np.ndarray],
        capsys: pytest.CaptureFixture[str]) -> None:
    matrix = sitk_geometry_matrix(sphere_image[0])
    inside, outside = affine.ijk_to_ras(matrix, np.array([[45.0, 40.0, 20.0], [10.0, 10.0, 20.0]]))
    assert inside.min() < 0  # the README's case: a negative RAS coordinate right after --point
    out = tmp_path / "mask.nii.gz"
    argv = ["segment", str(ct_file), "--point", ",".join(f"{v:.2f}" for v in inside), "--point",
            ",".join(f"{v:.2f}" for v in outside) + ",-", "--no-cpp", "--output", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    voxels = int(np.count_nonzero(sitk.GetArrayFromImage(sitk.ReadImage(str(out)))))
    assert f"{voxels} voxels = {voxels * 2 * 2 * 3.5 / 1000:.1f} ml" in printed
    assert "1 include (+) and 1 exclude (-) clicks" in printed


def test_segment_never_replaces_an_existing_mask(ct_file: Path, tmp_path: Path, no_model: None) -> None:
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"the user's earlier mask")
    assert main(["segment", str(ct_file), "--point", "1,2,3", "--coords", "ijk", "--output", str(out)]) == 2
    assert out.read_bytes() == b"the user's earlier mask"


def test_demo_refuses_an_output_folder_with_results_before_computing(no_model: None, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo_out"
    out.mkdir()
    (out / "liver.nii.gz").write_bytes(b"earlier result")
    assert main(["demo", "--output", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "liver.nii.gz").read_bytes() == b"earlier result"


def test_growcut_without_the_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch, no_model: None,
                                                             tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def missing(*args: object, **kwargs: object) -> None:
        raise ModuleNotFoundError("No module named 'vtkmodules'", name="vtkmodules")

    monkeypatch.setattr(cli_evaluate, "grow_from_seeds", missing)
    argv = ["evaluate", "--data", str(tmp_path), "--output", str(tmp_path / "eval"), "--baseline", "growcut"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "pip install 'CTSAM3DLib[growcut]'" in err and "vtkmodules" in err


def test_report_files_respect_the_umask(tmp_path: Path) -> None:
    record = ClickRecord("a", "liver", "ctsam3d", 1, 0.5, 0.4, 0.1, 0.1, None)
    result = EvalResult((1,), 1.0, ("ctsam3d",), (0,), (record,))
    old = os.umask(0o022)
    try:
        paths = write_report(result, tmp_path / "eval")
    finally:
        os.umask(old)
    assert {p.stat().st_mode & 0o777 for p in paths} == {0o644}


@pytest.mark.parametrize(("text", "expected"), [("10", 10.0), ("0", 0.0), ("off", math.inf), (" OFF ", math.inf)])
def test_cpp_reach_depth_reads_a_depth_or_off(text: str, expected: float) -> None:
    assert parse_depth(text) == expected


@pytest.mark.parametrize("text", ["-1", "nan", "deep", ""])
def test_unusable_cpp_reach_depths_are_refused(text: str, ct_file: Path, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["segment", str(ct_file), "--point", "1,2,3", "--cpp-reach-depth", text,
              "--output", str(tmp_path / "m.nii.gz")])
    assert exit_info.value.code == 2
    assert not (tmp_path / "m.nii.gz").exists()
