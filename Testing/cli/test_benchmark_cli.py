"""``ctsam3d benchmark``: JSON keys and types, the printed table, and a clean CUDA refusal."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from CTSAM3DLib.benchmarks import latency as benchmark
from CTSAM3DLib.benchmarks import organ, timing
from CTSAM3DLib.cli.main import main
from CTSAM3DLib.engine import planning
from CTSAM3DLib.geometry.model_space import ModelGrid

# Keys every variant entry must have, with numeric values (peak_cuda_mb is null on CPU).
REQUIRED_KEYS = ("open_s", "first_click_ms", "reclick_ms", "cpp_organ_s", "cpp_patches", "peak_rss_mb",
                 "peak_cuda_mb", "train_samples_per_s")


def _write(array: np.ndarray, path: Path) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((2.0, 2.0, 2.5))
    image.SetOrigin((-30.0, 12.0, 4.0))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


@pytest.fixture()
def small_case(tmp_path: Path) -> tuple[Path, Path]:
    """A 60x60x40 CT with a bright sphere, and a case folder where the sphere is the 'liver'."""
    rng = np.random.default_rng(0)
    zz, yy, xx = np.meshgrid(np.arange(40), np.arange(60), np.arange(60), indexing="ij")
    sphere = ((xx - 30) * 2.0) ** 2 + ((yy - 30) * 2.0) ** 2 + ((zz - 20) * 2.5) ** 2 < 25.0 ** 2
    ct = (np.where(sphere, 150.0, -50.0) + rng.normal(0, 10, sphere.shape)).astype(np.int16)
    _write(ct, tmp_path / "image.nii.gz")
    _write(ct, tmp_path / "case" / "ct.nii.gz")
    _write(sphere.astype(np.uint8), tmp_path / "case" / "segmentations" / "liver.nii.gz")
    return tmp_path / "image.nii.gz", tmp_path / "case"


@pytest.fixture()
def restore_threads() -> Iterator[None]:
    """``--threads`` sets torch's process-wide thread count: put it back afterwards."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(value)


def test_benchmark_writes_json_and_prints_table(small_case: tuple[Path, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str], restore_threads: None,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    image, case = small_case
    monkeypatch.setattr(organ, "FORCED_RING_PATCHES", 9)  # a smaller forced ring keeps the test fast
    out = tmp_path / "out" / "bench.json"
    # One thread: robust when other processes load the CPU (two spinning threads then crawl).
    rc = main(["benchmark", "--image", str(image), "--cpp-case", str(case), "--variant", "compact",
               "--random-weights", "--repeats", "1", "--threads", "1", "--json", str(out)])
    assert rc == 0
    result = json.loads(out.read_text())
    assert result["device"] == "cpu" and result["threads"] == 1
    assert list(result["variants"]) == ["compact"]
    entry = result["variants"]["compact"]
    assert entry["weights"] == "random"
    assert set(REQUIRED_KEYS) <= set(entry)
    for key in ("first_click_ms", "reclick_ms"):
        assert set(entry[key]) == {"p50", "p95"}
        assert all(_is_number(v) and v > 0 for v in entry[key].values())
    for key in ("open_s", "cpp_organ_s", "peak_rss_mb", "train_samples_per_s"):
        assert _is_number(entry[key]) and entry[key] > 0, key
    assert entry["peak_cuda_mb"] is None
    # Random weights: CPP is forced over the ring of neighbours (here 8 of the 26), and says so.
    assert entry["cpp_patches"] == 9 and entry["cpp_mode"] == "forced-9-ring (random weights)"
    assert entry["cpp_ring_s"] == entry["cpp_organ_s"] and "cpp_organ_dice" not in entry
    assert "default_click_ms" not in entry  # random weights decide no CPP policy: no default click
    assert "synthetic" in entry["train_note"]
    assert {"first_click", "reclick", "cpp_organ", "train_step"} <= set(entry["warmup_ms"])
    targets = {t["target"] for t in result["targets"]}
    assert targets >= {"first_click_ms.p50 <= 100.0", "open_s <= 2.0"} and "default_click_ms.p50 <= 1000.0" not in targets
    printed = capsys.readouterr().out
    assert "first click p50 (ms)" in printed and "CPP organ (s)" in printed
    assert "targets" in printed and ("PASS" in printed or "FAIL" in printed)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_benchmark_cuda_without_gpu_fails_cleanly(small_case: tuple[Path, Path], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    image, case = small_case
    out = tmp_path / "bench.json"
    rc = main(["benchmark", "--image", str(image), "--cpp-case", str(case), "--device", "cuda", "--json", str(out)])
    err = capsys.readouterr().err
    assert rc != 0
    assert "CUDA" in err and "Traceback" not in err
    assert not out.exists()


def test_benchmark_amp_on_cpu_is_refused(small_case: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    image, case = small_case
    rc = main(["benchmark", "--image", str(image), "--cpp-case", str(case), "--amp", "--json",
               str(tmp_path / "bench.json")])
    assert rc != 0
    assert "CUDA" in capsys.readouterr().err


def test_benchmark_missing_image_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["benchmark", "--image", str(tmp_path / "nope.nii.gz"), "--json", str(tmp_path / "bench.json")])
    assert rc != 0
    assert "nope.nii.gz" in capsys.readouterr().err


def test_targets_pass_and_fail_per_device_and_variant() -> None:
    fast = {"variant": "compact", "weights": "bundled", "open_s": 1.0, "first_click_ms": {"p50": 90.0},
            "reclick_ms": {"p50": 40.0}, "cpp_organ_s": 2.0, "default_click_ms": {"p50": 900.0},
            "correction_click_ms": {"p50": 450.0}}
    tiny = {"variant": "restv2_tiny", "weights": "random", "open_s": 3.0, "first_click_ms": {"p50": 12.0},
            "reclick_ms": {"p50": 20.0}, "cpp_organ_s": 0.05}
    cpu = {(t["variant"], t["target"]): t["pass"] for t in benchmark.evaluate_targets("cpu", {"c": fast, "t": tiny})}
    assert cpu == {("c", "first_click_ms.p50 <= 100.0"): True, ("c", "reclick_ms.p50 < first_click_ms.p50"): True,
                   ("c", "cpp_organ_s <= 1.5"): False, ("c", "open_s <= 2.0"): True,
                   ("c", "default_click_ms.p50 <= 1000.0"): True, ("c", "correction_click_ms.p50 <= 300.0"): False,
                   ("t", "reclick_ms.p50 < first_click_ms.p50"): False, ("t", "open_s <= 2.0"): False}
    gpu = {(t["variant"], t["target"]): t["pass"] for t in benchmark.evaluate_targets("cuda", {"t": tiny})}
    assert gpu[("t", "first_click_ms.p50 <= 15.0")] and gpu[("t", "cpp_organ_s <= 0.1")]
    assert ("t", "default_click_ms.p50 <= 100.0") not in gpu  # random weights: no default click to judge


def test_click_points_fall_in_distinct_patches(small_case: tuple[Path, Path]) -> None:
    image = sitk.ReadImage(str(small_case[0]))
    points = benchmark.spread_points(image, 4)
    grid = ModelGrid.for_image(image)
    starts = {planning.new_patch_start(grid.lps_to_model(image.TransformContinuousIndexToPhysicalPoint(p.tolist())),
                                       grid.shape_xyz) for p in points}
    assert len(starts) == 4
    assert all(np.all(p >= 0) and np.all(p < np.asarray(image.GetSize())) for p in points)


def test_default_and_correction_clicks_on_the_organ_case(small_case: tuple[Path, Path], random_predictor,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The default click (fresh session per run, default settings) and the simulator's next click after it."""
    monkeypatch.setattr(timing, "SLOW_PHASE_S", math.inf)  # a busy machine must not cut the repeats
    monkeypatch.setattr(timing, "LONG_PHASE_S", math.inf)
    case = organ.load_cpp_case(small_case[1])
    warm: dict[str, float | None] = {}
    samples: dict[str, list[float]] = {}
    entry = organ.organ_fields(random_predictor, case, torch.device("cpu"), 2, True, warm, samples)
    assert len(samples["default_click"]) == 2 and set(entry["default_click_ms"]) == {"p50", "p95"}
    assert entry["cpp_organ_s"] == entry["default_click_ms"]["p50"] / 1000 and entry["cpp_mode"] == "policy"
    assert entry["default_click_patches"] >= 1 and 0 <= entry["default_click_dice"] <= 1
    assert warm["default_click"] is not None
    # the random network does not segment the sphere perfectly: the simulator corrects it, once per run
    assert len(samples["correction_click"]) == 2 and warm["correction_click"] is not None
    assert entry["correction_click_patches"] >= 1 and set(entry["correction_click"]) == {"point_ijk", "positive"}


def test_default_image_is_the_shared_thorax_ct(shared_data: Path) -> None:
    assert benchmark.default_image_path() == shared_data / "unlabeled" / "thorax_ct.nii.gz"
    assert benchmark.default_image_path().is_file()
