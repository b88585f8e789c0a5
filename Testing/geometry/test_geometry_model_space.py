"""Tests for CTSAM3DLib.geometry.model_space: grid, lazy patches, paste-back."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.spatial.transform import Rotation

from CTSAM3DLib.geometry import (
    MODEL_SPACING_MM,
    PAD_HU,
    ModelGrid,
    affine,
    extract_patch,
    extract_patches,
    resample_to_input,
)
from CTSAM3DLib.io import sitk_to_volume

# World-linear HU ramp: value = RAMP_GRADIENT . lps + RAMP_OFFSET.
RAMP_GRADIENT = np.array([2.0, -1.5, 4.0])
RAMP_OFFSET = 100.0


def _oblique_ramp_image() -> sitk.Image:
    """Float image, anisotropic, oblique and flipped, whose values are linear in LPS."""
    direction = Rotation.from_euler("zyx", [25, -10, 15], degrees=True).as_matrix() @ np.diag([1.0, -1.0, 1.0])
    image = sitk.Image([40, 30, 12], sitk.sitkFloat32)
    image.SetSpacing([0.8, 1.1, 3.0])
    image.SetOrigin([-20.0, 15.0, -7.0])
    image.SetDirection(direction.ravel().tolist())
    k, j, i = np.meshgrid(*[np.arange(n) for n in (12, 30, 40)], indexing="ij")
    lps = affine.ijk_to_lps(sitk_to_volume(image), np.stack([i, j, k], -1).reshape(-1, 3))
    ramp = (lps @ RAMP_GRADIENT + RAMP_OFFSET).reshape(12, 30, 40).astype(np.float32)
    ramped = sitk.GetImageFromArray(ramp)
    ramped.CopyInformation(image)
    return ramped


def _aligned_image(size: tuple[int, int, int] = (20, 18, 16)) -> sitk.Image:
    rng = np.random.default_rng(1)
    image = sitk.GetImageFromArray(rng.uniform(-1000, 1000, size[::-1]).astype(np.float32))
    image.SetSpacing([MODEL_SPACING_MM] * 3)
    image.SetOrigin([10.0, -5.0, 3.0])
    return image


def _model_voxels_lps(grid: ModelGrid, start: np.ndarray, size: int) -> np.ndarray:
    """LPS of every voxel of a patch, shape (size, size, size, 3) indexed (z, y, x)."""
    z, y, x = np.meshgrid(*[np.arange(size)] * 3, indexing="ij")
    model = np.stack([x, y, z], -1).reshape(-1, 3) + start
    return grid.model_to_lps(model).reshape(size, size, size, 3)


def test_grid_of_aligned_image_matches_it() -> None:
    image = _aligned_image()
    grid = ModelGrid.for_image(image)
    assert grid.origin_lps == image.GetOrigin()
    assert grid.shape_xyz == image.GetSize()
    assert grid.spacing_mm == MODEL_SPACING_MM


def test_grid_spans_oblique_bounding_box() -> None:
    image = _oblique_ramp_image()
    grid = ModelGrid.for_image(image)
    size = image.GetSize()
    corners = [image.TransformIndexToPhysicalPoint([a, b, c]) for a in (0, size[0] - 1)
               for b in (0, size[1] - 1) for c in (0, size[2] - 1)]
    np.testing.assert_allclose(grid.origin_lps, np.min(corners, axis=0))
    extent = np.max(corners, axis=0) - np.min(corners, axis=0)
    np.testing.assert_array_equal(grid.shape_xyz, np.floor(extent / 1.5 + 1e-6).astype(int) + 1)
    assert ModelGrid.for_image(sitk_to_volume(image)) == grid


def test_model_lps_round_trip() -> None:
    grid = ModelGrid((1.0, -2.0, 3.5), (10, 11, 12))
    points = np.random.default_rng(2).uniform(-5, 20, (7, 3))
    np.testing.assert_allclose(grid.lps_to_model(grid.model_to_lps(points)), points, atol=1e-12)
    np.testing.assert_allclose(grid.model_to_lps([1, 0, 0]), [2.5, -2.0, 3.5])
    np.testing.assert_allclose(affine.ijk_to_lps(grid.ijk_to_lps, [[2, 3, 4]]), grid.model_to_lps([[2, 3, 4]]))


def test_extract_patch_samples_linear_ramp() -> None:
    image = _oblique_ramp_image()
    grid = ModelGrid.for_image(image)
    start = np.array([-3, 2, 1])
    patch = extract_patch(image, grid, start, size=24)
    assert patch.dtype == np.float32 and patch.shape == (24, 24, 24)
    lps = _model_voxels_lps(grid, start, 24)
    index = affine.lps_to_ijk(sitk_to_volume(image), lps.reshape(-1, 3)).reshape(lps.shape)
    inside = np.all((index >= 0) & (index <= np.array(image.GetSize()) - 1), axis=-1)
    outside = np.any((index < -0.5 - 1e-6) | (index > np.array(image.GetSize()) - 0.5 + 1e-6), axis=-1)
    assert inside.sum() > 1000 and outside.sum() > 1000
    np.testing.assert_allclose(patch[inside], lps[inside] @ RAMP_GRADIENT + RAMP_OFFSET, atol=2e-3)
    assert np.all(patch[outside] == PAD_HU)


def test_extract_patch_far_outside_is_padding() -> None:
    image = _aligned_image()
    grid = ModelGrid.for_image(image)
    assert np.all(extract_patch(image, grid, (-100, 0, 0), size=8) == PAD_HU)
    assert np.all(extract_patch(image, grid, np.array(grid.shape_xyz), size=8) == PAD_HU)


def test_extract_patch_on_aligned_grid_is_a_crop() -> None:
    image = _aligned_image()
    grid = ModelGrid.for_image(image)
    array = sitk.GetArrayFromImage(image)
    patch = extract_patch(image, grid, (2, 3, 4), size=8)
    np.testing.assert_allclose(patch, array[4:12, 3:11, 2:10], atol=1e-3)


def test_extract_patches_stacks() -> None:
    image = _aligned_image()
    grid = ModelGrid.for_image(image)
    starts = np.array([[0, 0, 0], [5, -2, 3]])
    patches = extract_patches(image, grid, starts, size=6)
    assert patches.shape == (2, 6, 6, 6)
    np.testing.assert_array_equal(patches[1], extract_patch(image, grid, starts[1], size=6))


def test_extract_patch_rejects_fractional_start() -> None:
    image = _aligned_image()
    with pytest.raises(ValueError, match="start_xyz"):
        extract_patch(image, ModelGrid.for_image(image), (0.5, 0, 0), size=4)


def test_resample_to_input_is_exact_on_aligned_grid() -> None:
    image = _aligned_image()
    grid = ModelGrid.for_image(image)
    prob = np.random.default_rng(3).uniform(0, 1, (7, 6, 5)).astype(np.float32)
    start_ijk, values = resample_to_input(prob, grid, (2, 3, 4), image)
    assert start_ijk == (2, 3, 4)
    assert values.dtype == np.float32
    np.testing.assert_allclose(values, prob, atol=1e-6)


def test_resample_to_input_clips_to_image() -> None:
    image = _aligned_image()
    grid = ModelGrid.for_image(image)
    prob = np.random.default_rng(4).uniform(0, 1, (6, 6, 6)).astype(np.float32)
    start_ijk, values = resample_to_input(prob, grid, (-2, 15, 1), image)
    assert start_ijk == (0, 15, 1)
    np.testing.assert_allclose(values, prob[:, :3, 2:], atol=1e-6)
    start_ijk, values = resample_to_input(prob, grid, (-50, 0, 0), image)
    assert values.shape == (0, 0, 0)


def test_resample_to_input_on_oblique_reference() -> None:
    image = _oblique_ramp_image()
    grid = ModelGrid.for_image(image)
    start, size_xyz = np.array([4, 5, 6]), (10, 9, 8)
    z, y, x = np.meshgrid(*[np.arange(n) for n in size_xyz[::-1]], indexing="ij")
    lps = grid.model_to_lps(np.stack([x, y, z], -1).reshape(-1, 3) + start)
    prob = (lps @ [0.01, 0.02, -0.01] + 0.5).reshape(x.shape).astype(np.float32)
    start_ijk, values = resample_to_input(prob, grid, start, image, default_value=np.nan)
    k, j, i = np.meshgrid(*[np.arange(n) for n in values.shape], indexing="ij")
    box_ijk = np.stack([i, j, k], -1).reshape(-1, 3) + np.array(start_ijk)
    box_lps = affine.ijk_to_lps(sitk_to_volume(image), box_ijk)
    model = grid.lps_to_model(box_lps) - start
    inside = np.all((model >= 0) & (model <= np.array(size_xyz) - 1), axis=-1)
    assert inside.sum() > 100
    np.testing.assert_allclose(values.ravel()[inside], box_lps[inside] @ [0.01, 0.02, -0.01] + 0.5, atol=1e-5)
    assert np.isnan(values).any()


def _sitk_linear(source: sitk.Image, origin: np.ndarray, spacing: list[float], direction: list[float],
                 size: list[int], default: float) -> np.ndarray:
    """SimpleITK's linear resampling of ``source`` onto a grid: the oracle for the separable paths."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin([float(v) for v in origin])
    resampler.SetOutputSpacing([float(v) for v in spacing])
    resampler.SetOutputDirection([float(v) for v in direction])
    resampler.SetSize([int(v) for v in size])
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(default)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(source))


@pytest.mark.parametrize("permutation", [(0, 1, 2), (1, 2, 0), (2, 0, 1), (0, 2, 1), (1, 0, 2), (2, 1, 0)])
def test_axis_aligned_inputs_resample_as_simpleitk_does(permutation: tuple[int, int, int]) -> None:
    """Every signed axis permutation (the separable fast path) matches SimpleITK's resampler both ways.

    Patches straddle the image's border, so the half-voxel edge rule and the padding are covered.
    """
    rng = np.random.default_rng(sum(p * 3**i for i, p in enumerate(permutation)))
    for signs in [(1, 1, 1), (-1, 1, 1), (1, -1, -1), (-1, -1, -1)]:
        direction = np.zeros((3, 3))
        direction[list(permutation), [0, 1, 2]] = signs
        size = rng.integers(9, 16, 3)
        image = sitk.GetImageFromArray(rng.integers(-1000, 1000, size[::-1]).astype(np.int16))
        image.SetSpacing(rng.uniform(0.7, 3.2, 3).tolist())
        image.SetOrigin(rng.uniform(-40, 40, 3).tolist())
        image.SetDirection(direction.ravel().tolist())
        grid = ModelGrid.for_image(image)
        start = rng.integers(-6, 6, 3)
        expected = _sitk_linear(image, grid.model_to_lps(start), [grid.spacing_mm] * 3, np.eye(3).ravel().tolist(),
                                [12] * 3, PAD_HU)
        patch = extract_patch(image, grid, start, size=12)
        assert (patch == PAD_HU).any() and (patch != PAD_HU).any()
        np.testing.assert_array_equal(patch == PAD_HU, expected == PAD_HU)
        np.testing.assert_allclose(patch, expected, atol=2e-3)

        prob = rng.uniform(0, 1, (7, 8, 9)).astype(np.float32)
        start_ijk, values = resample_to_input(prob, grid, start, image, default_value=np.nan)
        region = sitk.GetImageFromArray(prob)
        region.SetOrigin(grid.model_to_lps(start).tolist())
        region.SetSpacing([grid.spacing_mm] * 3)
        expected = _sitk_linear(region, image.TransformIndexToPhysicalPoint(start_ijk), list(image.GetSpacing()),
                                list(image.GetDirection()), list(values.shape[::-1]), np.nan)
        np.testing.assert_array_equal(np.isnan(values), np.isnan(expected))
        assert np.isfinite(values).sum() >= 8
        np.testing.assert_allclose(values, expected, atol=1e-5)
