"""Tests of the dataset readers (CTSAM3DLib.io.datasets) on tiny synthetic fixtures of each layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from CTSAM3DLib.io.datasets import (
    DatasetError,
    detect_layout,
    read_structures,
    scan_dataset,
    scan_datasets,
    subject_group,
)

# Geometry of the synthetic CTs: anisotropic spacing, non-identity direction.
SPACING = (2.0, 2.5, 3.0)
DIRECTION = (0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0)
SHAPE_ZYX = (12, 16, 20)


def _image(array: np.ndarray, spacing=SPACING, origin=(10.0, -20.0, 5.0)) -> sitk.Image:
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    img.SetOrigin(origin)
    img.SetDirection(DIRECTION)
    return img


def _ct(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1000, 1000, SHAPE_ZYX).astype(np.int16)


def _labels() -> np.ndarray:
    """Multilabel map: 1 = sphere, 2 = box, 3 = a second box."""
    z, y, x = np.indices(SHAPE_ZYX)
    lab = np.zeros(SHAPE_ZYX, np.uint8)
    lab[(z - 6) ** 2 + (y - 8) ** 2 + (x - 6) ** 2 <= 9] = 1
    lab[2:5, 2:6, 12:18] = 2
    lab[8:11, 10:14, 12:18] = 3
    return lab


def _write(img: sitk.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


def make_totalseg(root: Path, subjects=("s01", "s02"), splits=("train", "test")) -> Path:
    lab = _labels()
    for n, sid in enumerate(subjects):
        _write(_image(_ct(n)), root / sid / "ct.nii.gz")
        for value, name in ((1, "liver"), (2, "kidney_left"), (3, "kidney_right")):
            _write(_image((lab == value).astype(np.uint8)), root / sid / "segmentations" / f"{name}.nii.gz")
    (root / "meta.csv").write_text("image_id;split\n" + "".join(f"{s};{p}\n" for s, p in zip(subjects, splits)))
    return root


def make_nnunet(root: Path, v2: bool = True) -> Path:
    lab = _labels()
    for n, case in enumerate(("case_000", "case_001")):
        _write(_image(_ct(n)), root / "imagesTr" / f"{case}_0000.nii.gz")
        _write(_image(lab), root / "labelsTr" / f"{case}.nii.gz")
    meta: dict[str, object]
    if v2:
        meta = {"channel_names": {"0": "CT"}, "labels": {"background": 0, "liver": 1, "spleen": 2, "both": [2, 3]},
                "numTraining": 2, "file_ending": ".nii.gz"}
    else:  # MSD / nnU-Net v1: value -> name, training list without the _0000 suffix
        meta = {"modality": {"0": "CT"}, "labels": {"0": "background", "1": "liver", "2": "spleen", "3": "tumour"},
                "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                             for c in ("case_000", "case_001")]}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


def make_multilabel(root: Path) -> Path:
    lab = _labels()
    _write(_image(_ct()), root / "images" / "a.nii.gz")
    _write(_image(lab), root / "labels" / "a.nii.gz")
    _write(_image(_ct(1)), root / "images" / "b.nrrd")
    _write(_image(lab), root / "labels" / "b.nrrd")
    (root / "labels.csv").write_text("value,name\n0,background\n1,liver\n2,kidney\n3,kidney\n")
    return root


def test_totalseg_layout(tmp_path: Path) -> None:
    root = make_totalseg(tmp_path / "ts")
    assert detect_layout(root) == "totalseg"
    scan = scan_dataset(root)
    assert [s.subject_id for s in scan.subjects] == ["s01", "s02"]
    s01 = scan.subjects[0]
    assert s01.split == "train" and s01.structure_names == ["kidney_left", "kidney_right", "liver"]
    assert scan_datasets([root], splits=["train"]).subjects[0].subject_id == "s01"
    assert len(scan_datasets([root], splits=None).subjects) == 2
    image, masks, issues = read_structures(s01)
    assert not issues and set(masks) == {"liver", "kidney_left", "kidney_right"}
    np.testing.assert_array_equal(masks["liver"], _labels() == 1)


def test_subject_group_prefix_rule_and_meta_column(tmp_path: Path) -> None:
    assert [subject_group(i) for i in ("hn_kbp_12", "chest_nsclc_002", "s0011", "Liver-3", "007")] == [
        "hn", "chest", "s", "liver", "other"]
    root = make_totalseg(tmp_path / "ts")
    (root / "meta.csv").write_text("image_id;split;group\ns01;train;cohort_a\ns02;val;\n")
    by_id = {s.subject_id: s for s in scan_dataset(root).subjects}
    assert by_id["s01"].group == "cohort_a" and by_id["s02"].group == "s"  # empty column: the prefix rule


def test_shared_totalseg_example(shared_data: Path) -> None:
    scan = scan_datasets([shared_data / "totalseg-format"], splits=["train"])
    ids = {s.subject_id for s in scan.subjects}
    assert {"abdomen_pelvis", "abdomen_upper_tissues", "chest_cta_aorta"} <= ids and len(ids) == 173
    groups = {s.subject_id: s.group for s in scan.subjects}
    assert groups["hn_kbp_1"] == "hn" and groups["abdomen_pelvis"] == "abdomen" and groups["chest_cta_aorta"] == "chest"
    val = scan_datasets([shared_data / "totalseg-format"], splits=["val"]).subjects
    assert sorted({s.group for s in val}) == ["chest", "hn", "thorax"] and len(val) == 22
    tissues = next(s for s in scan.subjects if s.subject_id == "abdomen_upper_tissues")
    assert {"skeletal_muscle", "subcutaneous_fat", "torso_fat"} <= set(tissues.structure_names)


@pytest.mark.parametrize("v2", [True, False])
def test_nnunet_and_msd_layouts(tmp_path: Path, v2: bool) -> None:
    root = make_nnunet(tmp_path / "nn", v2=v2)
    assert detect_layout(root) == "nnunet"
    scan = scan_datasets([root])
    assert [s.subject_id for s in scan.subjects] == ["case_000", "case_001"] and not scan.issues
    assert scan.subjects[0].image_path.name == "case_000_0000.nii.gz"
    _, masks, _ = read_structures(scan.subjects[0])
    lab = _labels()
    np.testing.assert_array_equal(masks["liver"], lab == 1)
    np.testing.assert_array_equal(masks["spleen"], lab == 2)
    if v2:  # region label: union of values
        np.testing.assert_array_equal(masks["both"], (lab == 2) | (lab == 3))
    else:
        np.testing.assert_array_equal(masks["tumour"], lab == 3)


def test_multilabel_layout(tmp_path: Path) -> None:
    root = make_multilabel(tmp_path / "ml")
    assert detect_layout(root) == "multilabel"
    scan = scan_datasets([root])
    assert [s.subject_id for s in scan.subjects] == ["a", "b"]
    _, masks, _ = read_structures(scan.subjects[1])
    assert set(masks) == {"liver", "kidney"}
    np.testing.assert_array_equal(masks["kidney"], np.isin(_labels(), (2, 3)))


def test_label_only_folder_is_merged(tmp_path: Path) -> None:
    root = make_totalseg(tmp_path / "ts")
    extra = tmp_path / "tissues" / "s01" / "segmentations"
    _write(_image((_labels() == 2).astype(np.uint8)), extra / "skeletal_muscle.nii.gz")
    _write(_image((_labels() == 1).astype(np.uint8)), extra / "liver.nii.gz")  # duplicate name: ignored
    _write(_image((_labels() == 1).astype(np.uint8)), tmp_path / "tissues" / "nobody" / "segmentations" / "x.nii.gz")
    scan = scan_datasets([root, tmp_path / "tissues"], splits=["train"])
    (s01,) = scan.subjects
    assert "skeletal_muscle" in s01.structure_names and s01.structure_names.count("liver") == 1
    problems = " ".join(str(i) for i in scan.issues)
    assert "already labelled" in problems and "'nobody'" in problems and "image file missing" in problems


def test_missing_files_are_reported_not_fatal(tmp_path: Path) -> None:
    root = make_totalseg(tmp_path / "ts", subjects=("s01", "s02", "s03"), splits=("train",) * 3)
    (root / "s02" / "ct.nii.gz").unlink()
    with open(root / "meta.csv", "a") as f:
        f.write("s04;train\n")
    scan = scan_datasets([root])
    assert [s.subject_id for s in scan.subjects] == ["s01", "s03"]
    text = "\n".join(str(i) for i in scan.issues)
    assert "'s02'" in text and str(root / "s02" / "ct.nii.gz") in text
    assert "'s04'" in text and "folder is missing" in text
    nn = make_nnunet(tmp_path / "nn")
    (nn / "labelsTr" / "case_001.nii.gz").unlink()
    scan = scan_datasets([nn])
    assert [s.subject_id for s in scan.subjects] == ["case_000"]
    assert any("label file missing" in i.problem and i.subject_id == "case_001" for i in scan.issues)


def test_grid_mismatch_and_empty_mask(tmp_path: Path) -> None:
    root = make_totalseg(tmp_path / "ts", subjects=("s01",), splits=("train",))
    seg = root / "s01" / "segmentations"
    # the liver at half the resolution on x/y, same world extent: resampled by physical coordinates
    coarse = sitk.Resample(_image((_labels() == 1).astype(np.uint8)), [10, 8, 12], sitk.Transform(),
                           sitk.sitkNearestNeighbor, _image(_ct()).GetOrigin(), (4.0, 5.0, 3.0), DIRECTION, 0)
    _write(coarse, seg / "liver.nii.gz")
    _write(_image(np.zeros(SHAPE_ZYX, np.uint8)), seg / "empty.nii.gz")
    _write(_image((_labels() == 2).astype(np.uint8), origin=(900.0, 900.0, 900.0)), seg / "far_away.nii.gz")
    (seg / "broken.nii.gz").write_bytes(b"not an image")
    (subject,) = scan_datasets([root]).subjects
    _, masks, issues = read_structures(subject)
    assert set(masks) == {"liver", "kidney_left", "kidney_right"}
    truth = _labels() == 1
    dice = 2 * (masks["liver"] & truth).sum() / (masks["liver"].sum() + truth.sum())
    assert masks["liver"].shape == SHAPE_ZYX and dice > 0.7
    by_file = {i.path.name: i for i in issues}
    assert not by_file["liver.nii.gz"].skipped and "resampled" in by_file["liver.nii.gz"].problem
    assert by_file["empty.nii.gz"].skipped and "empty mask" in by_file["empty.nii.gz"].problem
    assert by_file["far_away.nii.gz"].skipped and "does not overlap" in by_file["far_away.nii.gz"].problem
    assert by_file["broken.nii.gz"].skipped and "unreadable" in by_file["broken.nii.gz"].problem
    assert all(i.subject_id == "s01" for i in issues)


def test_unknown_layout_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "x").mkdir()
    with pytest.raises(DatasetError, match="no supported dataset layout"):
        scan_datasets([tmp_path / "x"])
    with pytest.raises(DatasetError, match="does not exist"):
        scan_datasets([tmp_path / "missing"])
