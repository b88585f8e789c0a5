"""Tests of the simulated-click protocol (CTSAM3DLib.eval.protocol)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib import Session, SessionConfig
from CTSAM3DLib.eval.growcut import grow_from_seeds
from CTSAM3DLib.eval.protocol import (
    METHOD_CTSAM3D,
    METHOD_GROWCUT,
    EvalCase,
    _click_loop,
    _Collector,
    case_rng,
    dataset_cases,
    evaluate,
    select_structures,
    validate_clicks,
)
from CTSAM3DLib.io.datasets import scan_datasets
from CTSAM3DLib.io.readers import sitk_to_volume
from CTSAM3DLib.prompts.click import Click
from CTSAM3DLib.prompts.simulate import first_click, largest_component_click, next_click

# CPP off: the protocol is what is tested here, and single-patch clicks keep the tests fast.
_NO_CPP = SessionConfig(use_cpp=False)


def _small_ct() -> tuple[sitk.Image, dict[str, np.ndarray]]:
    """A 48x40x24 oblique CT (2.5 x 2.5 x 4 mm) with a bright sphere and a dim box, seeded noise."""
    rng = np.random.default_rng(0)
    shape = (24, 40, 48)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    sphere = ((xx - 26) * 2.5) ** 2 + ((yy - 20) * 2.5) ** 2 + ((zz - 12) * 4.0) ** 2 < 30.0 ** 2
    box = np.zeros(shape, dtype=bool)
    box[3:8, 4:12, 4:14] = True
    hu = np.where(sphere, 150.0, np.where(box, 60.0, -50.0)) + rng.normal(0, 10, shape)
    image = sitk.GetImageFromArray(hu.astype(np.int16))
    image.SetSpacing((2.5, 2.5, 4.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, -1.0))
    image.SetOrigin((10.0, -20.0, 5.0))
    return image, {"sphere": sphere.astype(np.uint8), "box": box.astype(np.uint8)}


@pytest.fixture(scope="module")
def case() -> EvalCase:
    image, masks = _small_ct()
    return EvalCase("case01", image, masks)


@pytest.fixture(scope="module")
def result(random_predictor, case):
    """One evaluation shared by the tests that only read it."""
    return evaluate(random_predictor, [case], [4, 1, 3, 3], session_config=_NO_CPP, seed=3)


def _spacing(case: EvalCase) -> tuple[float, ...]:
    return tuple(case.image.GetSpacing())  # type: ignore[union-attr]


def test_same_seed_gives_identical_results(random_predictor, case, result):
    again = evaluate(random_predictor, [case], (1, 3, 4), session_config=_NO_CPP, seed=3)

    def key(res):
        return [(r.case_id, r.structure, r.method, r.n_clicks, r.dsc, r.nsd, r.click) for r in res.records]

    assert key(again) == key(result)
    assert [t.clicks for t in again.traces] == [t.clicks for t in result.traces]
    other = evaluate(random_predictor, [case], (1,), session_config=_NO_CPP, seed=4, structures=["sphere"])
    assert other.traces[0].clicks[0] != next(t for t in result.traces if t.structure == "sphere").clicks[0]


def test_records_cover_every_structure_and_click_count(result):
    assert result.clicks == (1, 3, 4) and result.methods == (METHOD_CTSAM3D,)
    assert [(r.structure, r.n_clicks) for r in result.records] == [
        ("box", 1), ("box", 3), ("box", 4), ("sphere", 1), ("sphere", 3), ("sphere", 4)]
    for r in result.records:
        assert 0.0 <= r.dsc <= 1.0 and 0.0 <= r.nsd <= 1.0 and r.seconds >= 0.0
        assert r.cumulative_seconds >= r.seconds
    for t in result.traces:
        assert len(t.clicks) == len(t.seconds) <= 4
        assert t.clicks[0].is_positive


def test_clicks_follow_the_simulator(random_predictor, case, result):
    """Replaying the recorded clicks in a fresh session reproduces every next click."""
    spacing = _spacing(case)
    for trace in result.traces:
        gt = np.asarray(case.masks[trace.structure]) != 0
        assert trace.clicks[0] == first_click(gt, case_rng(3, case.case_id, trace.structure))
        session = Session(random_predictor, _NO_CPP)
        session.set_volume(case.image)  # type: ignore[arg-type]
        for k, click in enumerate(trace.clicks[:-1]):
            session.add_click(click.point_xyz, click.is_positive)
            expected = next_click(session.mask(), gt, spacing)
            assert trace.clicks[k + 1] == expected
            x, y, z = (int(v) for v in expected.point_xyz)
            # positive exactly when the farthest error voxel is a false negative
            assert expected.is_positive == bool(gt[z, y, x])
            assert bool(session.mask()[z, y, x]) != bool(gt[z, y, x])


def test_selection_by_name_and_by_volume(random_predictor, case):
    result = evaluate(random_predictor, [case], (1,), session_config=_NO_CPP, max_structures=1)
    assert {r.structure for r in result.records} == {"sphere"}
    result = evaluate(random_predictor, [case], (1,), session_config=_NO_CPP, structures=["box", "kidney"])
    assert {r.structure for r in result.records} == {"box"}
    assert any("kidney" in msg for msg in result.skipped)


def test_empty_structure_is_skipped(random_predictor, case):
    masks = dict(case.masks, empty=np.zeros_like(case.masks["box"]))
    result = evaluate(random_predictor, [EvalCase("c2", case.image, masks)], (1,), session_config=_NO_CPP,
                      structures=["empty", "box"])
    assert {r.structure for r in result.records} == {"box"}
    assert any("empty" in msg for msg in result.skipped)


def test_select_structures_order():
    volumes = {"a": 5.0, "b": 50.0, "c": 0.0, "d": 50.0}
    assert select_structures(volumes, None) == ["a", "b", "d"]
    assert select_structures(volumes, 2) == ["b", "d"]


@pytest.mark.parametrize("clicks", [[], [0, 1], [-3], [1.5], ["x"]])
def test_bad_click_counts_are_refused(clicks):
    with pytest.raises(ValueError, match="positive integers"):
        validate_clicks(clicks)


def test_bad_options_are_refused(random_predictor, case):
    with pytest.raises(ValueError, match="baseline"):
        evaluate(random_predictor, [case], (1,), baseline="nnunet")
    with pytest.raises(ValueError, match="max_structures"):
        evaluate(random_predictor, [case], (1,), max_structures=0)
    with pytest.raises(ValueError, match="tolerance"):
        evaluate(random_predictor, [case], (1,), nsd_tolerance_mm=-1.0)


def test_perfect_mask_stops_clicking():
    gt = np.zeros((6, 6, 6), dtype=bool)
    gt[2:4, 2:4, 2:4] = True
    calls: list[Click] = []

    def perfect(click: Click) -> tuple[np.ndarray, float]:
        calls.append(click)
        return gt.copy(), 0.5

    out = _Collector()
    _click_loop(perfect, gt, Click((2.0, 2.0, 2.0), True), (1, 3), ((1.0, 1.0, 1.0), 1.0, next_click), ("c", "s", "m"),
                0, out)
    assert len(calls) == 1
    assert [(r.n_clicks, r.dsc, r.seconds, r.cumulative_seconds, r.click) for r in out.records] == [
        (1, 1.0, 0.5, 0.5, calls[0]), (3, 1.0, 0.0, 0.5, None)]


def test_growcut_baseline_gets_its_own_simulated_clicks(random_predictor, case):
    pytest.importorskip("slicer_core", reason="slicer-core (growcut extra) is not installed")
    result = evaluate(random_predictor, [case], (1, 3), session_config=_NO_CPP, baseline="growcut",
                      structures=["box"])
    assert result.methods == (METHOD_CTSAM3D, METHOD_GROWCUT)
    traces = {t.method: t for t in result.traces}
    assert traces[METHOD_GROWCUT].clicks[0] == traces[METHOD_CTSAM3D].clicks[0]
    gt = case.masks["box"] != 0
    image_zyx = sitk.GetArrayFromImage(case.image)  # type: ignore[arg-type]
    clicks = traces[METHOD_GROWCUT].clicks
    for k in range(1, len(clicks)):
        mask = grow_from_seeds(image_zyx, _spacing(case), clicks[:k])
        assert clicks[k] == next_click(mask, gt, _spacing(case))
    assert {r.method for r in result.records} == {METHOD_CTSAM3D, METHOD_GROWCUT}


def test_dataset_cases_read_totalsegmentator_layout(tmp_path):
    image, masks = _small_ct()
    sphere = masks["sphere"]
    folder = tmp_path / "s01"
    (folder / "segmentations").mkdir(parents=True)
    sitk.WriteImage(image, str(folder / "ct.nii.gz"))
    for name, mask in (("sphere", sphere), ("nothing", np.zeros_like(sphere))):
        label = sitk.GetImageFromArray(mask)
        label.CopyInformation(image)
        sitk.WriteImage(label, str(folder / "segmentations" / f"{name}.nii.gz"))
    scan = scan_datasets([tmp_path])
    issues: list = []
    (case,) = list(dataset_cases(scan.subjects, issues))
    assert case.case_id == "s01" and sorted(case.masks) == ["nothing", "sphere"]
    np.testing.assert_array_equal(case.masks["sphere"](), sphere != 0)  # type: ignore[operator]
    assert not case.masks["nothing"]().any()  # type: ignore[operator]
    assert any("empty" in str(i) for i in issues)


def test_volume_and_lazy_inputs_give_the_same_result(random_predictor, case, result):
    lazy = EvalCase(case.case_id, lambda: sitk_to_volume(case.image), {"box": lambda: case.masks["box"]})
    again = evaluate(random_predictor, [lazy], (1,), session_config=_NO_CPP, seed=3)
    expected = next(r for r in result.records if r.structure == "box" and r.n_clicks == 1)
    (record,) = again.records
    assert (record.dsc, record.nsd, record.click) == (expected.dsc, expected.nsd, expected.click)


def test_several_seeds_repeat_each_structure_from_each_seeds_first_click(random_predictor, case, result):
    both = evaluate(random_predictor, [case], (1, 3, 4), session_config=_NO_CPP, seed=(3, 4))
    assert both.seeds == (3, 4)
    assert [(r.structure, r.n_clicks, r.dsc, r.nsd, r.click) for r in both.records if r.seed == 3] == [
        (r.structure, r.n_clicks, r.dsc, r.nsd, r.click) for r in result.records]
    alone = evaluate(random_predictor, [case], (1, 3, 4), session_config=_NO_CPP, seed=4)
    assert [(r.structure, r.n_clicks, r.dsc, r.click) for r in both.records if r.seed == 4] == [
        (r.structure, r.n_clicks, r.dsc, r.click) for r in alone.records]
    assert {(t.structure, t.seed) for t in both.traces} == {(s, k) for s in ("box", "sphere") for k in (3, 4)}


@pytest.mark.parametrize(("seed", "message"), [((), "one or more"), ((1, 1), "must not repeat"), ((1.5,), "integers")])
def test_bad_seeds_are_refused(random_predictor, case, seed, message):
    with pytest.raises(ValueError, match=message):
        evaluate(random_predictor, [case], (1,), session_config=_NO_CPP, seed=seed)


def test_several_seeds_need_random_first_clicks(random_predictor, case):
    with pytest.raises(ValueError, match="random first clicks"):
        evaluate(random_predictor, [case], (1,), session_config=_NO_CPP, seed=(0, 1), first_click_mode="deepest")


def test_cvpr25_rule_clicks_the_largest_error_component_and_measures_nsd_at_2mm(random_predictor, case):
    result = evaluate(random_predictor, [case], (1, 2), session_config=_NO_CPP, structures=["box"], click_rule="cvpr25")
    assert result.click_rule == "cvpr25" and result.nsd_tolerance_mm == 2.0
    first = next(t for t in result.traces).clicks[0]
    image = case.image() if callable(case.image) else case.image
    gt = np.asarray(case.masks["box"]() if callable(case.masks["box"]) else case.masks["box"]) != 0
    assert first == largest_component_click(np.zeros_like(gt), gt, image.GetSpacing())
    with pytest.raises(ValueError, match="cvpr25"):
        evaluate(random_predictor, [case], (1,), click_rule="cvpr25", seed=(0, 1))
    with pytest.raises(ValueError, match="click_rule"):
        evaluate(random_predictor, [case], (1,), click_rule="nearest")


def test_cases_keep_their_subject_group(random_predictor, case):
    grouped = dataclasses.replace(case, group="hn")
    result = evaluate(random_predictor, [grouped], (1,), session_config=_NO_CPP, structures=["box"])
    assert result.groups == {grouped.case_id: "hn"}
