"""Tests of the evaluation report files (CTSAM3DLib.eval.report), on hand-made results."""

from __future__ import annotations

import csv
import json

import pytest

from CTSAM3DLib.eval.protocol import ClickRecord, ClickTrace, EvalResult
from CTSAM3DLib.eval.report import CSV_COLUMNS, REPORT_FILES, check_output_dir, curve_auc, summarize, write_report
from CTSAM3DLib.prompts.click import Click


def _result(methods=("ctsam3d",)) -> EvalResult:
    """Two cases; 'liver' in both, 'spleen' only in case a; clicks 1 and 3."""
    values = {  # (case, structure, clicks) -> (dsc, nsd)
        ("a", "liver", 1): (0.6, 0.5), ("a", "liver", 3): (0.8, 0.7),
        ("b", "liver", 1): (0.4, 0.3), ("b", "liver", 3): (0.6, 0.5),
        ("a", "spleen", 1): (0.9, 0.8), ("a", "spleen", 3): (1.0, 1.0),
    }
    records, traces = [], []
    for method in methods:
        shift = 0.0 if method == "ctsam3d" else -0.1
        for (case, structure, n), (d, s) in values.items():
            click = Click((1.0, 2.0, 3.0), n == 1)
            records.append(ClickRecord(case, structure, method, n, d + shift, s + shift, 0.25, 0.25 * n, click))
        for case, structure in {(c, s) for c, s, _ in values}:
            traces.append(ClickTrace(case, structure, method, (Click((1.0, 2.0, 3.0), True),) * 3, (0.5, 0.25, 0.25)))
    return EvalResult((1, 3), 1.0, tuple(methods), (0,), tuple(records), tuple(traces), ("b: no structure 'spleen'",),
                      {"a": "hn", "b": "chest"})


def test_summary_has_exactly_the_documented_shape():
    summary = summarize(_result())
    assert list(summary) == ["clicks", "nsd_tolerance_mm", "click_rule", "seeds", "methods", "groups"]
    assert summary["clicks"] == [1, 3] and summary["nsd_tolerance_mm"] == 1.0 and summary["seeds"] == [0]
    assert summary["click_rule"] == "paper"
    assert list(summary["methods"]) == ["ctsam3d"]
    entry = summary["methods"]["ctsam3d"]
    assert list(entry) == ["mean_dsc", "auc_dsc", "final_dsc", "mean_nsd", "auc_nsd", "final_nsd", "subject_mean_dsc",
                           "mean_dsc_by_seed", "n_structures"]
    assert entry["mean_dsc_by_seed"] == {"0": entry["mean_dsc"]}
    assert list(entry["mean_dsc"]) == ["1", "3"] and list(entry["mean_nsd"]) == ["1", "3"]
    assert entry["n_structures"] == 2
    # organ-wise: liver = mean over its two cases, then the mean over structures
    assert entry["mean_dsc"]["1"] == pytest.approx((0.5 + 0.9) / 2)
    assert entry["mean_nsd"]["3"] == pytest.approx((0.6 + 1.0) / 2)
    # AUC over clicks 1-3 divided by their span: the mean of the two ends for a straight line
    assert entry["auc_dsc"] == pytest.approx((entry["mean_dsc"]["1"] + entry["mean_dsc"]["3"]) / 2)
    assert entry["final_dsc"] == entry["mean_dsc"]["3"] and entry["final_nsd"] == entry["mean_nsd"]["3"]
    # subjects: case a's mean (0.6 + 0.9) / 2 and case b's 0.4, then their mean; organ-wise gives (0.5 + 0.9) / 2
    assert entry["subject_mean_dsc"]["1"] == pytest.approx(((0.6 + 0.9) / 2 + 0.4) / 2)
    # groups: the same organ-wise mean over each group's own cases
    assert summary["groups"]["chest"]["cases"] == ["b"] and summary["groups"]["hn"]["cases"] == ["a"]
    assert summary["groups"]["chest"]["methods"]["ctsam3d"]["mean_dsc"] == {"1": pytest.approx(0.4),
                                                                             "3": pytest.approx(0.6)}
    assert summary["groups"]["hn"]["methods"]["ctsam3d"]["mean_dsc"]["1"] == pytest.approx((0.6 + 0.9) / 2)
    json.dumps(summary)


def test_curve_auc_of_uneven_click_steps():
    assert curve_auc({"1": 0.2, "3": 0.6, "9": 0.6}, (1, 3, 9)) == pytest.approx((0.8 + 3.6) / 8)
    assert curve_auc({"5": 0.7}, (5,)) == 0.7
    assert curve_auc({"1": None, "3": 0.5}, (1, 3)) is None


def test_growcut_key_only_when_run():
    assert "growcut" not in summarize(_result())["methods"]
    summary = summarize(_result(("ctsam3d", "growcut")))
    assert list(summary["methods"]) == ["ctsam3d", "growcut"]
    assert summary["methods"]["growcut"]["mean_dsc"]["1"] == pytest.approx((0.5 + 0.9) / 2 - 0.1)


def test_report_files_are_written(tmp_path):
    out = tmp_path / "out"
    paths = write_report(_result(("ctsam3d", "growcut")), out)
    assert [p.name for p in paths] == list(REPORT_FILES) and all(p.is_file() for p in paths)
    with open(out / "per_click.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 12
    assert {r["method"] for r in rows} == {"ctsam3d", "growcut"}
    assert rows[0]["click_positive"] == "1" and float(rows[1]["cumulative_seconds"]) == 0.75
    assert json.loads((out / "summary.json").read_text()) == summarize(_result(("ctsam3d", "growcut")))
    md = (out / "summary.md").read_text()
    assert "| ctsam3d | DSC | 0.700 ± 0.200 | 0.850 ± 0.150 |" in md
    assert "| liver | ctsam3d | 2 | 0.500 ± 0.100 | 0.700 ± 0.100 |" in md
    assert "Time per click" in md and "no structure 'spleen'" in md
    assert (out / "dsc_vs_clicks.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_existing_results_are_not_overwritten_silently(tmp_path):
    write_report(_result(), tmp_path)
    before = (tmp_path / "summary.json").read_text()
    with pytest.raises(FileExistsError, match="overwrite"):
        write_report(_result(("ctsam3d", "growcut")), tmp_path)
    assert (tmp_path / "summary.json").read_text() == before
    write_report(_result(("ctsam3d", "growcut")), tmp_path, overwrite=True)
    assert "growcut" in json.loads((tmp_path / "summary.json").read_text())["methods"]


def test_output_path_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "file.txt"
    target.write_text("x")
    with pytest.raises(FileExistsError, match="not a folder"):
        check_output_dir(target)
    check_output_dir(tmp_path / "new")  # a missing folder is fine


def test_several_seeds_get_their_own_means_and_a_per_seed_table(tmp_path):
    records = [ClickRecord("a", s, "ctsam3d", 1, d, d, 0.1, 0.1, None, seed)
               for seed, values in ((0, {"liver": 0.4, "spleen": 0.6}), (1, {"liver": 0.8, "spleen": 1.0}))
               for s, d in values.items()]
    result = EvalResult((1,), 1.0, ("ctsam3d",), (0, 1), tuple(records))
    entry = summarize(result)["methods"]["ctsam3d"]
    assert entry["mean_dsc_by_seed"] == {"0": {"1": pytest.approx(0.5)}, "1": {"1": pytest.approx(0.9)}}
    assert entry["mean_dsc"]["1"] == pytest.approx(0.7)
    write_report(result, tmp_path)
    md = (tmp_path / "summary.md").read_text()
    assert "seeds 0, 1." in md and "| 0 | ctsam3d | 0.500 |" in md and "| 1 | ctsam3d | 0.900 |" in md
    assert "| liver | ctsam3d | 2 | 0.600 ± 0.200 |" in md
    with open(tmp_path / "per_click.csv", newline="") as f:
        assert [r["seed"] for r in csv.DictReader(f)] == ["0", "0", "1", "1"]
