"""Tests of patch sampling and augmentation (CTSAM3DLib.train.augment)."""

from __future__ import annotations

import numpy as np

from CTSAM3DLib.model.predictor import scale_window
from CTSAM3DLib.train import augment


def _volume() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1000, (90, 100, 110)).astype(np.int16)
    mask = rng.random((30, 40, 50)) > 0.5
    return image, mask, np.array([20, 30, 10])


def test_crop_pads_outside() -> None:
    a = np.arange(24).reshape(2, 3, 4)
    out = augment.crop(a, np.array([-1, 1, 2]), (3, 3, 3), pad=-7)
    assert out[0].tolist() == [[-7] * 3] * 3 and out[1, 0].tolist() == [6, 7, -7] and out[1, 2].tolist() == [-7] * 3


def test_identity_transform_equals_integer_crops() -> None:
    image, mask, lo = _volume()
    args = (image, mask, lo, np.array([40, 50, 30]), np.array([30, 34, 28]), np.array([48, -3, 2]))
    plain = augment.sample_pair(*args, None)
    same = augment.sample_pair(*args, np.eye(3))
    start_u = np.array([10, 16, 2])  # anchor - anchor_in_u (x, y, z)
    np.testing.assert_array_equal(plain[0], image[2:66, 16:80, 10:74])
    np.testing.assert_array_equal(plain[2], augment.crop(mask, start_u[::-1] - lo, (64,) * 3, False))
    np.testing.assert_allclose(plain[0], same[0], atol=0.05)
    np.testing.assert_allclose(plain[1], same[1], atol=0.05)
    np.testing.assert_array_equal(plain[2], same[2])
    np.testing.assert_array_equal(plain[3], same[3])


def test_rotation_keeps_the_anchor_voxel_and_u_v_consistent() -> None:
    image, mask, lo = _volume()
    rng = np.random.default_rng(1)
    a = augment.random_affine(rng, 10.0, (0.9, 1.1))
    assert abs(abs(np.linalg.det(a)) ** (1 / 3) - 1) <= 0.1
    anchor, in_u = np.array([40, 50, 30]), np.array([30, 34, 28])
    hu_u, hu_v, _, _ = augment.sample_pair(image, mask, lo, anchor, in_u, np.array([8, 0, 0]), a)
    assert abs(hu_u[28, 34, 30] - image[30, 50, 40]) < 0.1
    np.testing.assert_allclose(hu_u[:, :, 8:], hu_v[:, :, :-8], atol=0.1)  # V = U shifted by 8 along x


def test_intensity_and_window() -> None:
    rng = np.random.default_rng(0)
    a, b, std = augment.intensity_params(rng, 0.05, 20.0, 0.0)
    hu = np.array([[[-1000.0, 0.0, 1000.0]]], np.float32)
    out = augment.apply_intensity(hu, a, b, std, rng)
    np.testing.assert_allclose(out, hu * (1 + a) + b, rtol=1e-6)
    np.testing.assert_allclose(scale_window(np.array([-2000.0, 0.0, 500.0]), (-1000, 1000)).numpy(), [0.0, 0.5, 0.75])


def test_flips_and_axis_swaps_move_image_mask_click_and_offset_together() -> None:
    rng = np.random.default_rng(1)
    hu = rng.normal(size=(64, 64, 64)).astype(np.float32)
    mask = np.zeros((64, 64, 64), bool)
    mask[5:9, 20:30, 40:60] = True
    click = np.array([50, 25, 7])  # (x, y, z), inside the mask
    offset = np.array([48, -48, 0])
    seen = set()
    for flips in [(False, False, False), (True, False, False), (False, True, True), (True, True, True)]:
        for perm in [(0, 1, 2), (2, 0, 1), (1, 0, 2), (0, 2, 1)]:
            img = augment.flip_swap_array(hu, flips, perm)
            m = augment.flip_swap_array(mask, flips, perm)
            x, y, z = augment.flip_swap_point(click, flips, perm).astype(int)
            assert m[z, y, x] and m.sum() == mask.sum()
            assert img[z, y, x] == hu[click[2], click[1], click[0]]  # the clicked voxel keeps its value
            # a voxel one step along old +x moves along new axis perm.index(0), sign flipped if x was flipped
            step = augment.flip_swap_point(click + [1, 0, 0], flips, perm) - augment.flip_swap_point(click, flips, perm)
            assert np.array_equal(step, augment.flip_swap_offset(np.array([1, 0, 0]), flips, perm))
            o = augment.flip_swap_offset(offset, flips, perm)
            assert sorted(np.abs(o).tolist()) == [0, 48, 48]
            seen.add(m.tobytes())
    assert len(seen) == 16  # every combination gives a different patch


def test_sampler_flips_keep_u_v_overlap_consistent(synthetic_data, tmp_path) -> None:
    from CTSAM3DLib.io.datasets import scan_datasets
    from CTSAM3DLib.train import TrainConfig
    from CTSAM3DLib.train.cache import build_cache
    from CTSAM3DLib.train.data import PairSampler

    cached, _ = build_cache(scan_datasets([synthetic_data]).subjects, tmp_path / "cache")
    cfg = TrainConfig(batch_size=4, aug_prob=0.0, intensity_prob=0.0, flip_prob=0.5, swap_prob=0.5)
    sampler = PairSampler(cached, cfg)
    for step in range(3):
        b = sampler.batch(step)
        s = len(b.names)
        for i in range(s):  # V's voxel q shows U's voxel q + offset: the shared region must match exactly
            off = b.offsets[i][::-1]  # (z, y, x)
            u, v = b.images[i, 0].numpy(), b.images[s + i, 0].numpy()
            src = tuple(slice(max(o, 0), 64 + min(o, 0)) for o in off)
            dst = tuple(slice(max(-o, 0), 64 - max(o, 0)) for o in off)
            if all(sl.stop > sl.start for sl in src):
                np.testing.assert_array_equal(v[dst], u[src])
            x, y, z = b.first_points[i].astype(int)
            assert b.gts[i, z, y, x]


def test_acquisition_augmentations_keep_shape_and_range() -> None:
    rng = np.random.default_rng(0)
    hu = rng.normal(0, 200, (64, 64, 64)).astype(np.float32)
    thick = augment.slice_thickness(hu, 4.5)
    assert thick.shape == hu.shape and thick[:, 10, 10].std() < hu[:, 10, 10].std()  # averaged along z
    np.testing.assert_allclose(thick[:, 10, 10].mean(), hu[:, 10, 10].mean(), atol=30)
    assert np.array_equal(augment.slice_thickness(hu, 1.0), hu)
    blurred = augment.blur(hu, 1.0)
    assert blurred.std() < hu.std()
    g = augment.gamma_hu(hu, 1.0, (-1000.0, 1000.0))
    np.testing.assert_allclose(g, hu, atol=1e-3)
    g2 = augment.gamma_hu(hu, 2.0, (-1000.0, 1000.0))
    assert np.all(g2 <= hu + 1e-3)  # gamma > 1 darkens inside the window
