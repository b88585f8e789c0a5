"""Tests of the model-space cache (CTSAM3DLib.train.cache) and the U/V pair sampler (CTSAM3DLib.train.data)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import write_synthetic_subject

from CTSAM3DLib.geometry.model_space import ModelGrid
from CTSAM3DLib.geometry.resample import resample_to_grid
from CTSAM3DLib.io.datasets import scan_datasets
from CTSAM3DLib.train import augment
from CTSAM3DLib.train.cache import build_cache, cache_folder
from CTSAM3DLib.train.config import TrainConfig
from CTSAM3DLib.train.data import PairSampler


def _cache(data: Path, cache: Path):
    scan = scan_datasets([data])
    cached, issues = build_cache(scan.subjects, cache)
    return scan, cached, list(scan.issues) + issues


def test_cache_matches_whole_volume_resampling(synthetic_data: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    scan, cached, issues = _cache(synthetic_data, tmp_path / "cache")
    assert time.perf_counter() - t0 < 20 and not issues
    (subject,) = cached
    ct = sitk.ReadImage(str(scan.subjects[0].image_path))
    grid = ModelGrid.for_image(ct)
    assert subject.grid == grid and subject.image.dtype == np.int16 and isinstance(subject.image, np.memmap)
    np.testing.assert_allclose(subject.image, resample_to_grid(ct, grid, is_label=False), atol=0.51)
    names = [s.name for s in subject.structures]
    assert sorted(names) == ["big", "box", "small"]
    for k, info in enumerate(subject.structures):
        label = sitk.ReadImage(str(synthetic_data / "synth" / "segmentations" / f"{info.name}.nii.gz"))
        full = resample_to_grid(label, grid, is_label=True) > 0
        box = tuple(slice(a, a + n) for a, n in zip(info.lo_zyx, info.shape_zyx))
        np.testing.assert_array_equal(subject.mask(k), full[box])
        assert full.sum() == info.voxels == subject.mask(k).sum()


def test_stale_cache_is_rebuilt(tmp_path: Path) -> None:
    data = write_synthetic_subject(tmp_path / "data")
    scan, cached, _ = _cache(data, tmp_path / "cache")
    folder = cache_folder(scan.subjects[0], tmp_path / "cache")
    stamp = (folder / "index.json").stat().st_mtime_ns
    _cache(data, tmp_path / "cache")
    assert (folder / "index.json").stat().st_mtime_ns == stamp  # reused
    label = data / "synth" / "segmentations" / "box.nii.gz"
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(label)))
    arr[:] = 0
    arr[5:10, 5:10, 5:10] = 1
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(sitk.ReadImage(str(label)))
    sitk.WriteImage(img, str(label))
    os.utime(label, ns=(time.time_ns(), time.time_ns() + 10**9))
    _, cached, _ = _cache(data, tmp_path / "cache")
    box = next(s for s in cached[0].structures if s.name == "box")
    assert box.voxels < 1000 and (folder / "index.json").stat().st_mtime_ns != stamp
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]


def test_bad_data_is_reported_and_the_rest_is_used(tmp_path: Path) -> None:
    data = write_synthetic_subject(tmp_path / "data", "good")
    write_synthetic_subject(data, "no_ct", seed=1)
    (data / "no_ct" / "ct.nii.gz").unlink()
    write_synthetic_subject(data, "broken_ct", seed=2)
    (data / "broken_ct" / "ct.nii.gz").write_bytes(b"garbage")
    seg = data / "good" / "segmentations"
    ref = sitk.ReadImage(str(seg / "big.nii.gz"))
    # the same "big" mask on another grid (3 mm isotropic, identity direction): resampled, kept
    moved = sitk.Resample(ref, [40, 40, 30], sitk.Transform(), sitk.sitkNearestNeighbor, (-45.0, -90.0, -35.0),
                          (3.0, 3.0, 3.0), np.eye(3).ravel().tolist(), 0)
    assert sitk.GetArrayViewFromImage(moved).any()
    sitk.WriteImage(moved, str(seg / "big_other_grid.nii.gz"))
    far = sitk.Image(ref)
    far.SetOrigin((5000.0, 5000.0, 5000.0))
    sitk.WriteImage(far, str(seg / "far.nii.gz"))  # no overlap with the CT: refused
    empty = sitk.Image(ref.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(ref)
    sitk.WriteImage(empty, str(seg / "empty.nii.gz"))
    (seg / "zero_bytes.nii.gz").write_bytes(b"")  # an empty label file
    write_synthetic_subject(data, "no_structures", seed=3)
    shutil.rmtree(data / "no_structures" / "segmentations")
    ct_path = data / "good" / "ct.nii.gz"
    ct = sitk.ReadImage(str(ct_path))
    metal = sitk.GetArrayFromImage(ct)
    metal[20, 45, 40:44] = 30000  # a dental filling / hip implant: HU far above any window
    metal_img = sitk.GetImageFromArray(metal)
    metal_img.CopyInformation(ct)
    sitk.WriteImage(metal_img, str(ct_path))
    scan, cached, issues = _cache(data, tmp_path / "cache")
    assert [c.subject_id for c in cached] == ["good"]
    assert int(np.max(cached[0].image)) > 20000  # stored as HU; the window clamps it when sampled
    text = "\n".join(map(str, issues))
    assert f"subject 'good': {seg / 'zero_bytes.nii.gz'}:" in text
    assert "subject 'no_structures'" in text and "no label files; subject skipped" in text
    assert f"subject 'no_ct': {data / 'no_ct' / 'ct.nii.gz'}: image file missing" in text
    assert f"subject 'broken_ct': {data / 'broken_ct' / 'ct.nii.gz'}: unreadable image" in text
    assert f"subject 'good': {seg / 'empty.nii.gz'}: structure 'empty' has an empty mask; skipped" in text
    assert f"subject 'good': {seg / 'far.nii.gz'}: label grid" in text and "does not overlap" in text
    assert f"subject 'good': {seg / 'big_other_grid.nii.gz'}: label grid differs" in text
    good = cached[0]
    names = [s.name for s in good.structures]
    assert "empty" not in names and "far" not in names
    a = good.structures[names.index("big")]
    b = good.structures[names.index("big_other_grid")]
    assert abs(a.voxels - b.voxels) < 0.1 * a.voxels and np.abs(np.subtract(a.lo_zyx, b.lo_zyx)).max() <= 2
    # the run goes on with the good subject
    sampler = PairSampler(cached, TrainConfig())
    batch = sampler.batch(0)
    assert batch.images.shape == (4, 1, 64, 64, 64) and 0.0 <= float(batch.images.min()) <= float(batch.images.max()) <= 1.0


def test_sampler_pairs(synthetic_data: Path, tmp_path: Path) -> None:
    _, cached, _ = _cache(synthetic_data, tmp_path / "cache")
    cfg = TrainConfig(batch_size=3, aug_prob=0.5, intensity_prob=0.5, exclude_structures=("bo*",))
    sampler = PairSampler(cached, cfg)
    assert sampler.num_structures == 2
    b0, b0_again, b1 = sampler.batch(0), sampler.batch(0), sampler.batch(1)
    np.testing.assert_array_equal(b0.images.numpy(), b0_again.images.numpy())  # pure function of (step, rank)
    assert not np.array_equal(b0.images.numpy(), b1.images.numpy())
    assert not np.array_equal(b0.images.numpy(), sampler.batch(0, rank=1).images.numpy())
    for b in (b0, b1):
        assert b.images.shape == (6, 1, 64, 64, 64) and b.images.min() >= 0 and b.images.max() <= 1
        assert all("box" not in n for n in b.names)
        for i in range(6):
            x, y, z = b.first_points[i].astype(int)
            assert b.gts[i, z, y, x], "first click on foreground"
            assert b.gts[i].any()
        for i in range(3):  # U's click sits within center_jitter of the patch centre
            assert np.all(np.abs(b.first_points[i] - 32) <= cfg.center_jitter)


def test_large_structures_get_a_neighbour_patch(synthetic_data: Path, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    _, cached, _ = _cache(synthetic_data, tmp_path / "cache")
    cfg = TrainConfig(batch_size=1, aug_prob=0.0, intensity_prob=0.0)
    sampler = PairSampler(cached, cfg)
    (subject,) = sampler.subjects
    offsets: list[np.ndarray] = []
    real = augment.sample_pair

    def spy(*args, **kwargs):
        offsets.append(np.asarray(args[5]))
        return real(*args, **kwargs)

    monkeypatch.setattr(augment, "sample_pair", spy)
    rng = np.random.default_rng(0)
    names = [s.name for s in subject.structures]
    for _ in range(10):
        sample = sampler.pair(subject, names.index("big"), rng)
        gt_u, gt_v, name = sample.gt_u, sample.gt_v, sample.name
        assert name == "synth/big" and gt_u.any() and gt_v.any()
        # V is the engine's CPP neighbour: 48 voxels (+- neighbour_jitter) along each shifted axis
        off = np.abs(offsets[-1])
        assert off.max() >= 48 - cfg.neighbour_jitter
        assert np.all((off <= cfg.neighbour_jitter) | (np.abs(off - 48) <= cfg.neighbour_jitter))
    for _ in range(10):  # a structure that fits in U: V is a slightly shifted U, still holding it
        sample = sampler.pair(subject, names.index("small"), rng)
        gt_u, gt_v = sample.gt_u, sample.gt_v
        assert gt_v.any() and np.abs(offsets[-1]).max() <= 48 + cfg.neighbour_jitter


def test_size_bias_prefers_large_structures(synthetic_data: Path, tmp_path: Path) -> None:
    _, cached, _ = _cache(synthetic_data, tmp_path / "cache")
    uniform = PairSampler(cached, TrainConfig(size_bias=0.0))
    biased = PairSampler(cached, TrainConfig(size_bias=1.0, size_power=1.0))
    np.testing.assert_allclose(uniform.probs[0], 1 / 3)
    names = [cached[0].structures[k].name for k in biased.choices[0]]
    assert names[int(np.argmax(biased.probs[0]))] == "big" and biased.probs[0].max() > 0.9


def test_emphasis_multiplies_a_structures_share(synthetic_data: Path, tmp_path: Path) -> None:
    _, cached, _ = _cache(synthetic_data, tmp_path / "cache")
    plain = PairSampler(cached, TrainConfig(size_bias=0.0))
    emphasised = PairSampler(cached, TrainConfig(size_bias=0.0, emphasis_structures=("sm*",), emphasis_factor=4.0))
    names = [cached[0].structures[k].name for k in plain.choices[0]]
    odds = emphasised.probs[0] / plain.probs[0]
    small = names.index("small")
    np.testing.assert_allclose(odds / odds[(small + 1) % len(names)], [4.0 if n == "small" else 1.0 for n in names])
    assert emphasised.probs[0].sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="emphasis_factor must be positive"):
        TrainConfig(emphasis_factor=0.0)


def test_no_structure_left_is_an_error(synthetic_data: Path, tmp_path: Path) -> None:
    _, cached, _ = _cache(synthetic_data, tmp_path / "cache")
    with pytest.raises(ValueError, match="No training structure left"):
        PairSampler(cached, TrainConfig(exclude_structures=("*",)))
    shutil.rmtree(tmp_path / "cache")


def test_parallel_cache_equals_serial_and_group_weights_set_the_draw(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for n, sid in enumerate(("hn_1", "hn_2", "hn_3", "abdomen_1")):
        write_synthetic_subject(data, sid, seed=n)
    subjects = scan_datasets([data]).subjects
    serial, _ = build_cache(subjects, tmp_path / "serial")
    parallel, _ = build_cache(subjects, tmp_path / "parallel", workers=2)
    assert [c.subject_id for c in parallel] == [c.subject_id for c in serial]
    for a, b in zip(serial, parallel):
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))
        np.testing.assert_array_equal(np.asarray(a.bits), np.asarray(b.bits))
    assert [c.group for c in serial] == ["abdomen", "hn", "hn", "hn"]
    uniform = PairSampler(serial, TrainConfig(batch_size=1))
    weighted = PairSampler(serial, TrainConfig(batch_size=1, group_weights={"abdomen": 0.5, "hn": 0.5}))
    assert uniform.subject_probs is None
    np.testing.assert_allclose(weighted.subject_probs, [0.5, 1 / 6, 1 / 6, 1 / 6])
    assert "abdomen 50% (1 subjects)" in weighted.group_shares()
    drawn = [weighted.batch(step).names[0].split("/")[0] for step in range(120)]
    assert 0.35 < drawn.count("abdomen_1") / len(drawn) < 0.65  # uniform would give 0.25
    with pytest.raises(ValueError, match="draws none of the training groups"):
        PairSampler(serial, TrainConfig(group_weights={"chest": 1.0}))


def test_batches_from_workers_equal_the_step_batches(synthetic_data: Path, tmp_path: Path) -> None:
    _, cached, _ = _cache(synthetic_data, tmp_path / "cache")
    sampler = PairSampler(cached, TrainConfig(batch_size=1, rounds=1))
    ahead = list(sampler.batches(3, 6, workers=2))
    assert len(ahead) == 3
    for step, batch in zip(range(3, 6), ahead):
        expected = sampler.batch(step)
        assert batch.names == expected.names
        np.testing.assert_array_equal(batch.images.numpy(), expected.images.numpy())
        np.testing.assert_array_equal(batch.gts, expected.gts)
