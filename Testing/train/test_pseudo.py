"""Tests of the class-agnostic pseudo-structures and their use in the training sampler."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from CTSAM3DLib.io.datasets import scan_datasets
from CTSAM3DLib.train import TrainConfig, pseudo
from CTSAM3DLib.train.cache import build_cache, pseudo_paths
from CTSAM3DLib.train.data import PairSampler


def _phantom(seed: int = 0) -> np.ndarray:
    """A 1.5 mm HU phantom (z, y, x): air around a fat-walled body with two lungs, an organ and a bone."""
    rng = np.random.default_rng(seed)
    shape = (60, 96, 110)
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    hu = np.full(shape, -1000.0, np.float32)
    body = ((xx - 55) / 50) ** 2 + ((yy - 48) / 42) ** 2 < 1
    hu[body] = -100.0  # fat
    inner = ((xx - 55) / 44) ** 2 + ((yy - 48) / 36) ** 2 < 1
    hu[inner] = 40.0  # soft tissue
    for cx in (35, 75):
        hu[((xx - cx) / 14) ** 2 + ((yy - 45) / 18) ** 2 + ((zz - 30) / 25) ** 2 < 1] = -850.0  # lungs
    hu[((xx - 55) / 8) ** 2 + ((yy - 75) / 8) ** 2 < 1] = 700.0  # spine-like bone column
    return hu + rng.normal(0, 10, shape).astype(np.float32)


def test_generator_is_deterministic_bounded_and_never_empty() -> None:
    hu = _phantom()
    a = pseudo.generate(hu, seed=3, supervoxel_mm=(25, 50), min_voxels=300, max_voxels=200_000)
    b = pseudo.generate(hu, seed=3, supervoxel_mm=(25, 50), min_voxels=300, max_voxels=200_000)
    assert len(a) > 0
    assert [p.name for p in a] == [p.name for p in b]
    for p, q in zip(a, b):
        assert p.lo_zyx == q.lo_zyx
        np.testing.assert_array_equal(p.mask, q.mask)
    kinds = {p.name.rsplit("_", 1)[0] for p in a}
    assert "pseudo_air" in kinds and any(k.startswith("pseudo_slic") for k in kinds)
    for p in a:
        assert 300 <= int(p.mask.sum()) <= 200_000
        assert p.mask.sum() >= 0.1 * p.mask.size  # compact
        lo = np.asarray(p.lo_zyx)
        assert np.all(lo >= 0) and np.all(lo + p.mask.shape <= hu.shape)
    lungs = [p for p in a if p.name.startswith("pseudo_air")]
    assert len(lungs) == 2 and all(p.mask.sum() > 20_000 for p in lungs)  # both lungs, not the air outside
    default = pseudo.generate(hu, seed=3, min_voxels=300, max_voxels=200_000)  # supervoxels only when asked for
    assert [p.name for p in default] == [p.name for p in a if not p.name.startswith("pseudo_slic")]


def test_an_air_region_with_a_partial_volume_rim_is_kept() -> None:
    """A lung's rim (partial volume with the chest wall, -450 HU) must not make it 'inhomogeneous'."""
    hu = _phantom()
    lungs = hu < -700
    rim = lungs & ~ndimage.binary_erosion(lungs)
    hu[rim] = -450.0
    assert float(hu[lungs].std()) > 120.0  # the whole region fails the homogeneity bound
    kept = [p for p in pseudo.generate(hu, seed=3, min_voxels=300, max_voxels=200_000) if p.name.startswith("pseudo_air")]
    assert len(kept) == 2 and all(p.mask.sum() > 20_000 for p in kept)


def test_sampler_draws_pseudo_structures_at_the_configured_ratio(synthetic_data: Path, tmp_path: Path) -> None:
    scan = scan_datasets([synthetic_data])
    cached, _ = build_cache(scan.subjects, tmp_path / "cache", pseudo_seed=0)
    assert cached[0].pseudo, "the synthetic CT yields pseudo-structures"
    bits, index = pseudo_paths(cached[0].folder, 0)
    assert bits.is_file() and index.is_file()
    first = index.read_text()
    build_cache(scan.subjects, tmp_path / "cache", pseudo_seed=0)  # built once, then reused
    assert index.read_text() == first
    sampler = PairSampler(cached, TrainConfig(batch_size=4, pseudo_ratio=0.5, aug_prob=0.0, intensity_prob=0.0))
    names = [n for step in range(10) for n in sampler.batch(step).names]
    share = np.mean(["pseudo_" in n for n in names])
    assert 0.25 <= share <= 0.75
    none = PairSampler(cached, TrainConfig(batch_size=4, pseudo_ratio=0.0))
    assert not any("pseudo_" in n for step in range(5) for n in none.batch(step).names)
    bands = {p.name.split("_")[1] for p in cached[0].pseudo}
    assert len(bands) >= 2, "the synthetic CT yields more than one HU band"
    kept = sorted(bands)[0]  # exclusion patterns apply to pseudo-structures too
    only = PairSampler(cached, TrainConfig(batch_size=4, pseudo_ratio=1.0, exclude_structures=("pseudo_*",),
                                           aug_prob=0.0, intensity_prob=0.0))
    assert only.num_structures == len(only.choices[0])  # labelled structures only
    one_band = PairSampler(cached, TrainConfig(batch_size=4, pseudo_ratio=1.0, aug_prob=0.0, intensity_prob=0.0,
                                               exclude_structures=tuple(f"pseudo_{b}_*" for b in bands - {kept})))
    drawn = {n for step in range(5) for n in one_band.batch(step).names if "pseudo_" in n}
    assert drawn and all(n.split("/")[-1].startswith(f"pseudo_{kept}_") for n in drawn)
    # Supervoxels asked for: their own files beside the default ones, which stay as they were.
    with_sv, _ = build_cache(scan.subjects, tmp_path / "cache", pseudo_seed=0, supervoxel_mm=(25.0,))
    assert pseudo_paths(cached[0].folder, 0, (25.0,))[1].is_file() and index.read_text() == first
    assert any(p.name.startswith("pseudo_slic25") for p in with_sv[0].pseudo)
    assert not any(p.name.startswith("pseudo_slic") for p in cached[0].pseudo)


@pytest.mark.parametrize("pseudo_ratio", [0.0, 1.0])
def test_unlabelled_subject_trains_on_pseudo_structures_only(synthetic_data: Path, tmp_path: Path,
                                                             pseudo_ratio: float) -> None:
    scan = scan_datasets([synthetic_data])
    unlabelled = [type(s)(s.subject_id, s.image_path, (), s.split, "unlabeled", s.root) for s in scan.subjects]
    cached, _ = build_cache(unlabelled, tmp_path / "cache", pseudo_seed=0)
    assert cached and not cached[0].structures and cached[0].pseudo
    if pseudo_ratio == 0.0:
        with pytest.raises(ValueError, match="No training structure"):
            PairSampler(cached, TrainConfig(pseudo_ratio=0.0))
    else:
        batch = PairSampler(cached, TrainConfig(pseudo_ratio=pseudo_ratio)).batch(0)
        assert all("pseudo_" in n for n in batch.names)


def test_unlabelled_folders_never_bring_in_a_validation_scan(shared_data: Path, synthetic_data: Path,
                                                             tmp_path: Path) -> None:
    from CTSAM3DLib.io.datasets import scan_unlabeled

    val = [s for s in scan_datasets([shared_data / "totalseg-format"]).subjects if s.split == "val"]
    assert val, "the shared data has a val subject"
    scan = scan_unlabeled([shared_data / "unlabeled"], held_out=val)
    assert not scan.subjects  # unlabeled/thorax_ct.nii.gz is the val subject's scan
    assert any("held-out subject 'thorax_threshold'" in i.problem for i in scan.issues)
    folder = tmp_path / "extra_cts"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes((synthetic_data / "synth" / "ct.nii.gz").read_bytes())
    (folder / "notes.txt").write_text("not a CT")
    scan = scan_unlabeled([folder], held_out=val)
    assert [s.subject_id for s in scan.subjects] == ["extra_cts/a"] and not scan.subjects[0].labels


def test_train_refuses_unlabelled_folders_without_pseudo_structures(synthetic_data: Path, tmp_path: Path) -> None:
    from CTSAM3DLib.train import train

    with pytest.raises(ValueError, match="pseudo_ratio"):
        train(TrainConfig(steps=1), [synthetic_data], tmp_path / "run", unlabeled_dirs=[synthetic_data / "synth"],
              progress=False)


def _airways(shape: tuple[int, int, int] = (70, 60, 120)) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Two 'lungs' (balls, radius 14) joined to a 'trachea' (cylinder, radius 6) by thin 'bronchi' (radius 2)."""
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in shape], indexing="ij")
    parts = {
        "left": (xx - 30) ** 2 + (yy - 30) ** 2 + (zz - 20) ** 2 <= 14**2,
        "right": (xx - 90) ** 2 + (yy - 30) ** 2 + (zz - 20) ** 2 <= 14**2,
        "trachea": ((xx - 60) ** 2 + (yy - 30) ** 2 <= 6**2) & (zz >= 34) & (zz <= 66),
    }
    bronchi = ((yy - 30) ** 2 + (zz - 34) ** 2 <= 2**2) & (xx >= 30) & (xx <= 90)
    return parts["left"] | parts["right"] | parts["trachea"] | bronchi, parts


def test_split_at_necks_separates_lungs_and_trachea_but_not_a_convex_region() -> None:
    region, parts = _airways()
    pieces = pseudo.split_at_necks(region)
    assert np.all((pieces > 0) == region)
    label = {name: int(np.bincount(pieces[mask]).argmax()) for name, mask in parts.items()}
    assert len(set(label.values())) == 3  # left lung, right lung and trachea apart
    for name, mask in parts.items():
        assert (pieces[mask] == label[name]).mean() > 0.95
    trachea_piece = pieces == label["trachea"]
    assert not (trachea_piece & (parts["left"] | parts["right"])).any()
    # an ellipsoid and two broadly overlapping balls stay whole
    assert len(np.unique(pseudo.split_at_necks(parts["left"])[parts["left"]])) == 1
    zz, yy, xx = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in (40, 40, 70)], indexing="ij")
    blob = ((xx - 28) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 <= 14**2) | ((xx - 42) ** 2 + (yy - 20) ** 2 + (zz - 20) ** 2 <= 14**2)
    assert len(np.unique(pseudo.split_at_necks(blob)[blob])) == 1


def test_lungs_joined_by_an_airway_tree_become_separate_pseudo_structures() -> None:
    """One air component (lungs + airways) must not be one target: a trachea click would fill the lungs."""
    region, parts = _airways()
    rng = np.random.default_rng(0)
    hu = np.where(region, -850.0, 40.0).astype(np.float32) + rng.normal(0, 10, region.shape).astype(np.float32)
    hu[:, :, :3] = hu[:, :, -3:] = -1000.0  # air outside the patient at the sides
    kept = [p for p in pseudo.generate(hu, seed=0, min_voxels=300) if p.name.startswith("pseudo_air")]
    full = []
    for p in kept:
        m = np.zeros(hu.shape, bool)
        lo = p.lo_zyx
        m[lo[0]:lo[0] + p.mask.shape[0], lo[1]:lo[1] + p.mask.shape[1], lo[2]:lo[2] + p.mask.shape[2]] = p.mask
        full.append(m)
    for lung in ("left", "right"):
        assert sum((m & parts[lung]).sum() > 0.9 * parts[lung].sum() for m in full) == 1
    assert not any((m & parts["left"]).any() and (m & parts["right"]).any() for m in full)
    assert not any((m & parts["trachea"]).sum() > 0.5 * parts["trachea"].sum() and (m & parts["left"]).any() for m in full)
