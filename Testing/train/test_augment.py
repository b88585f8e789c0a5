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
