"""End-to-end tests of ``ctsam3d evaluate`` (CTSAM3DLib.cli.evaluate) on a synthetic dataset."""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CTSAM3DLib import build_model
from CTSAM3DLib.cli import evaluate as evaluate_cli
from CTSAM3DLib.model.checkpoint import save_checkpoint


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="ctsam3d")
    sub = parser.add_subparsers(dest="command", required=True)
    evaluate_cli.add_parser(sub)
    args = parser.parse_args(["evaluate", *argv])
    return args.func(args)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """TotalSegmentator layout: one subject (a sphere CT, 2 structures) in split 'train'."""
    root = tmp_path_factory.mktemp("totalseg")
    rng = np.random.default_rng(0)
    shape = (20, 36, 40)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    sphere = ((xx - 22) * 3.0) ** 2 + ((yy - 18) * 3.0) ** 2 + ((zz - 10) * 4.0) ** 2 < 27.0 ** 2
    box = np.zeros(shape, dtype=bool)
    box[2:6, 3:9, 3:11] = True
    ct = sitk.GetImageFromArray((np.where(sphere, 150, np.where(box, 60, -50)) + rng.normal(0, 10, shape))
                                .astype(np.int16))
    ct.SetSpacing((3.0, 3.0, 4.0))
    ct.SetDirection((-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0))
    subject = root / "s0001"
    (subject / "segmentations").mkdir(parents=True)
    sitk.WriteImage(ct, str(subject / "ct.nii.gz"))
    for name, mask in (("sphere", sphere), ("box", box)):
        label = sitk.GetImageFromArray(mask.astype(np.uint8))
        label.CopyInformation(ct)
        sitk.WriteImage(label, str(subject / "segmentations" / f"{name}.nii.gz"))
    (root / "meta.csv").write_text("image_id;split\ns0001;train\n")
    return root


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "compact.pt"
    save_checkpoint(path, build_model("compact"), "compact", (-1000.0, 1000.0))
    return path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_end_to_end_writes_the_report(dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    rc = _run(["--data", str(dataset), "--output", str(out), "--checkpoint", str(checkpoint), "--clicks", "1,2",
               "--max-patches", "2", "--seed", "1"])
    assert rc == 0
    for name in ("per_click.csv", "summary.json", "summary.md", "dsc_vs_clicks.png"):
        assert (out / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["clicks"] == [1, 2] and summary["nsd_tolerance_mm"] == 1.0
    assert list(summary["methods"]) == ["ctsam3d"]
    assert summary["methods"]["ctsam3d"]["n_structures"] == 2
    rows = _read_csv(out / "per_click.csv")
    assert {(r["structure"], r["method"], r["clicks"]) for r in rows} == {
        (s, "ctsam3d", n) for s in ("sphere", "box") for n in ("1", "2")}
    captured = capsys.readouterr()
    assert "mean DSC" in captured.out
    assert "evaluate" in captured.err  # the tqdm progress bar goes to stderr


def test_cvpr25_rule_groups_and_auc_in_the_report(dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "cvpr"
    rc = _run(["--data", str(dataset), "--output", str(out), "--checkpoint", str(checkpoint), "--clicks", "1,3",
               "--max-patches", "2", "--click-rule", "cvpr25"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["click_rule"] == "cvpr25" and summary["nsd_tolerance_mm"] == 2.0
    entry = summary["methods"]["ctsam3d"]
    assert entry["final_dsc"] == entry["mean_dsc"]["3"] and 0.0 <= entry["auc_dsc"] <= 1.0
    assert summary["groups"]["s"]["cases"] == ["s0001"]  # the id's leading letters
    assert "AUC" in capsys.readouterr().out and "Mean DSC per subject group" in (out / "summary.md").read_text()


def test_growcut_column_only_with_baseline(dataset, checkpoint, tmp_path):
    pytest.importorskip("slicer_core", reason="slicer-core (growcut extra) is not installed")
    out = tmp_path / "gc"
    rc = _run(["--data", str(dataset / "s0001"), "--output", str(out), "--checkpoint", str(checkpoint),
               "--clicks", "1,2", "--no-cpp", "--baseline", "growcut", "--max-structures", "1"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["methods"]) == ["ctsam3d", "growcut"]
    rows = _read_csv(out / "per_click.csv")
    assert {r["method"] for r in rows} == {"ctsam3d", "growcut"}
    assert {r["structure"] for r in rows} == {"sphere"}  # the larger structure
    first = {r["method"]: (r["click_x"], r["click_y"], r["click_z"]) for r in rows if r["clicks"] == "1"}
    assert first["ctsam3d"] == first["growcut"]
    # --baseline-only: the same Grow-from-seeds rows, without the model
    rc = _run(["--data", str(dataset / "s0001"), "--output", str(out / "alone"), "--checkpoint", str(checkpoint),
               "--clicks", "1,2", "--baseline", "growcut", "--baseline-only", "--max-structures", "1"])
    assert rc == 0 and list(json.loads((out / "alone" / "summary.json").read_text())["methods"]) == ["growcut"]
    alone = [(r["clicks"], r["dsc"], r["click_x"]) for r in _read_csv(out / "alone" / "per_click.csv")]
    assert alone == [(r["clicks"], r["dsc"], r["click_x"]) for r in rows if r["method"] == "growcut"]


def test_several_seeds_run_each_structure_once_per_seed(dataset, checkpoint, tmp_path, capsys):
    one, both = tmp_path / "one", tmp_path / "both"
    argv = ["--data", str(dataset), "--checkpoint", str(checkpoint), "--clicks", "1,2", "--no-cpp"]
    assert _run([*argv, "--output", str(one), "--seed", "1"]) == 0
    assert _run([*argv, "--output", str(both), "--seed", "1,2"]) == 0
    assert "seed 2:" in capsys.readouterr().out
    rows = _read_csv(both / "per_click.csv")
    assert len(rows) == 2 * len(_read_csv(one / "per_click.csv")) and {r["seed"] for r in rows} == {"1", "2"}
    # seed 1's runs are those of the single-seed evaluation, click for click
    fields = ("case", "structure", "clicks", "dsc", "nsd", "click_x", "click_y", "click_z", "click_positive")
    assert [tuple(r[f] for f in fields) for r in rows if r["seed"] == "1"] == [
        tuple(r[f] for f in fields) for r in _read_csv(one / "per_click.csv")]
    single = json.loads((one / "summary.json").read_text())["methods"]["ctsam3d"]
    summary = json.loads((both / "summary.json").read_text())
    entry = summary["methods"]["ctsam3d"]
    assert summary["seeds"] == [1, 2] and entry["mean_dsc_by_seed"]["1"] == single["mean_dsc"]
    for n in ("1", "2"):  # every structure runs from every seed: the mean is the mean of the seeds' means
        by_seed = [entry["mean_dsc_by_seed"][s][n] for s in ("1", "2")]
        assert entry["mean_dsc"][n] == pytest.approx(sum(by_seed) / 2)
    assert "## Mean DSC per seed" in (both / "summary.md").read_text()


def test_existing_results_need_overwrite(dataset, checkpoint, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--data", str(dataset), "--output", str(out), "--checkpoint", str(checkpoint), "--clicks", "1",
            "--no-cpp", "--structures", "box"]
    assert _run(argv) == 0
    before = (out / "summary.json").read_text()
    assert _run(argv) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert _run([*argv, "--overwrite", "--nsd-tolerance", "3"]) == 0
    assert json.loads((out / "summary.json").read_text())["nsd_tolerance_mm"] == 3.0


@pytest.mark.parametrize(("extra", "message"), [
    (["--clicks", "1,x"], "--clicks"),
    (["--clicks", "0,2"], "positive integers"),
    (["--structures", "kidney,liver"], "No structures found"),
    (["--split", "test"], "No labelled subjects"),
    (["--max-structures", "0"], "max_structures"),
    (["--cpp-min-agreement", "1.5"], "--cpp-min-agreement"),
    (["--refine-passes", "9"], "refine_passes"),
    (["--seed", "0,x"], "--seed"),
    (["--seed", "1,1"], "must not repeat"),
    (["--seed", "0,1", "--first-click", "deepest"], "random first clicks"),
    (["--seed", "0,1", "--click-rule", "cvpr25"], "cvpr25"),
    (["--baseline-only"], "--baseline-only needs --baseline"),
])
def test_user_errors_exit_2_with_one_paragraph(dataset, checkpoint, tmp_path, capsys, extra, message):
    rc = _run(["--data", str(dataset), "--output", str(tmp_path / "o"), "--checkpoint", str(checkpoint), *extra])
    err = capsys.readouterr().err
    assert rc == 2
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "summary.json").exists()


def test_cpp_options_reach_the_engine(dataset, checkpoint, tmp_path, monkeypatch):
    seen = {}

    def fake_evaluate(predictor, cases, clicks, **kwargs):
        seen["config"] = kwargs["session_config"]
        return evaluate_cli.EvalResult(clicks=tuple(clicks), nsd_tolerance_mm=1.0, methods=("ctsam3d",), seeds=(0,),
                                       records=())

    monkeypatch.setattr(evaluate_cli, "evaluate", fake_evaluate)
    _run(["--data", str(dataset), "--output", str(tmp_path / "o"), "--checkpoint", str(checkpoint),
          "--cpp-reach-depth", "10", "--max-patches", "5", "--cpp-mode", "geometric", "--refine-passes", "2"])
    config = seen["config"]
    assert (config.cpp_reach_depth, config.max_patches, config.cpp_mode, config.use_cpp) == (10.0, 5, "geometric", True)
    assert config.refine_passes == 2 and (config.spread_positive_depth, config.spread_negative_depth) == (8.0, 4.0)
    for text, depth in (("off", math.inf), ("2.5", 2.5)):
        _run(["--data", str(dataset), "--output", str(tmp_path / f"o{text}"), "--checkpoint", str(checkpoint),
              "--positive-spread-depth", text, "--negative-spread-depth", text])
        assert seen["config"].spread_positive_depth == seen["config"].spread_negative_depth == depth


def test_missing_data_folder(checkpoint, tmp_path, capsys):
    rc = _run(["--data", str(tmp_path / "nope"), "--output", str(tmp_path / "o"), "--checkpoint", str(checkpoint)])
    err = capsys.readouterr().err
    assert rc == 2 and "does not exist" in err and "Traceback" not in err


def test_growcut_without_slicer_core_is_a_clear_error(dataset, checkpoint, tmp_path, capsys, monkeypatch):
    from CTSAM3DLib.eval import protocol

    def missing(*args, **kwargs):
        raise ImportError("The Grow-from-seeds baseline needs slicer-core: pip install 'CTSAM3DLib[growcut]'")

    monkeypatch.setattr(protocol, "grow_from_seeds", missing)
    rc = _run(["--data", str(dataset), "--output", str(tmp_path / "o"), "--checkpoint", str(checkpoint),
               "--baseline", "growcut"])
    err = capsys.readouterr().err
    assert rc == 2 and "slicer-core" in err and "Traceback" not in err


def test_subject_folders_of_one_dataset_are_each_evaluated_once(dataset, tmp_path):
    """Several subject folders of one dataset were each scanned as their whole parent: every subject
    came back once per folder given (N folders, N x the work), and a dataset folder given beside a
    subject folder lost its other subjects."""
    root = tmp_path / "two"
    for name in ("s0001", "s0002"):
        shutil.copytree(dataset / "s0001", root / name)
    other = tmp_path / "other"
    shutil.copytree(dataset / "s0001", other / "s0003")

    def ids(*folders: Path) -> list[str]:
        return sorted(s.subject_id for s in evaluate_cli._scan([str(f) for f in folders], None)[0])

    assert ids(root / "s0001", root / "s0002") == ["s0001", "s0002"]
    assert ids(root / "s0002") == ["s0002"]
    assert ids(root / "s0001", other) == ["s0001", "s0003"]
    assert ids(root, root / "s0001") == ["s0001", "s0002"]
