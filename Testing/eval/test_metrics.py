"""Tests of Dice and normalized surface Dice on hand-made masks (CTSAM3DLib.eval.metrics)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from CTSAM3DLib.eval.metrics import dice, normalized_surface_dice


def _cubes(shift_x: int = 1, size: int = 4, shape=(12, 12, 12)) -> tuple[np.ndarray, np.ndarray]:
    """gt: a size^3 cube at [4, 4+size) on each axis; pred: the same cube shifted along x."""
    gt = np.zeros(shape, dtype=bool)
    gt[4 : 4 + size, 4 : 4 + size, 4 : 4 + size] = True
    pred = np.zeros(shape, dtype=bool)
    pred[4 : 4 + size, 4 : 4 + size, 4 + shift_x : 4 + size + shift_x] = True
    return pred, gt


def _reference_nsd(pred, gt, spacing_xyz, tol):
    """Whole-array reference, no cropping."""
    face = ndimage.generate_binary_structure(3, 1)

    def surface(mask):
        return mask & ~ndimage.binary_erosion(np.pad(mask, 1), face)[1:-1, 1:-1, 1:-1]

    sp, sg = surface(pred), surface(gt)
    d_to_g = ndimage.distance_transform_edt(~sg, sampling=spacing_xyz[::-1])
    d_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing_xyz[::-1])
    close = (d_to_g[sp] <= tol).sum() + (d_to_p[sg] <= tol).sum()
    return close / (sp.sum() + sg.sum())


def test_dice_identical_disjoint_and_empty():
    pred, gt = _cubes(shift_x=0)
    assert dice(pred, gt) == 1.0
    far, _ = _cubes(shift_x=4)
    assert dice(far, gt) == 0.0
    empty = np.zeros_like(gt)
    assert dice(empty, empty) == 1.0
    assert dice(empty, gt) == 0.0


def test_dice_of_shifted_cubes():
    # 4^3 cubes shifted by one voxel overlap in 3*4*4 = 48 voxels: 2*48 / (64 + 64).
    pred, gt = _cubes(shift_x=1)
    assert dice(pred, gt) == pytest.approx(0.75)
    assert dice(pred.astype(np.uint8), gt.astype(np.float32)) == pytest.approx(0.75)


def test_nsd_identical_masks_is_one():
    pred, gt = _cubes(shift_x=0)
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 1.0), tolerance_mm=0.0) == 1.0
    assert normalized_surface_dice(pred, gt, (0.7, 1.3, 3.0)) == 1.0


def test_nsd_shifted_cubes_hand_computed():
    # Each 4^3 cube has 64 - 8 = 56 surface voxels. Shifted by one voxel in x, 36 voxels
    # (the 12-voxel rings at the 3 shared x planes) lie on both surfaces; the other 20 of
    # each surface are exactly one x-step (spacing_x mm) from the other surface, and the
    # 4 face-centre voxels at the inner x face are also one y- or z-step away from it.
    pred, gt = _cubes(shift_x=1)
    nsd = normalized_surface_dice
    assert nsd(pred, gt, (1.0, 1.0, 1.0), tolerance_mm=1.0) == pytest.approx(1.0)
    assert nsd(pred, gt, (1.0, 1.0, 1.0), tolerance_mm=0.5) == pytest.approx(72 / 112)
    # x spacing 2 mm: the x-step costs 2 mm, but the 4 inner-face centres are 1 mm (in y/z)
    # from the other cube's ring, so (36 + 4) per side are within 1 mm.
    assert nsd(pred, gt, (2.0, 1.0, 1.0), tolerance_mm=1.0) == pytest.approx(80 / 112)
    assert nsd(pred, gt, (2.0, 1.0, 1.0), tolerance_mm=2.0) == pytest.approx(1.0)
    # z spacing does not matter for a shift along x at tolerance 0.5 mm.
    assert nsd(pred, gt, (1.0, 1.0, 2.0), tolerance_mm=0.5) == pytest.approx(72 / 112)


def test_nsd_array_border_is_surface():
    # gt fills a 3^3 array: its surface is the 26 border voxels (border counts as surface).
    gt = np.ones((3, 3, 3), dtype=bool)
    pred = np.zeros_like(gt)
    pred[1, 1, 1] = True
    # pred surface {centre} is 1 mm from gt's 6 face-centre voxels: (1 + 6) / (1 + 26).
    assert normalized_surface_dice(pred, gt, (1.0, 1.0, 1.0)) == pytest.approx(7 / 27)


def test_nsd_empty_cases():
    _, gt = _cubes()
    empty = np.zeros_like(gt)
    assert normalized_surface_dice(empty, empty, (1.0, 1.0, 1.0)) == 1.0
    assert normalized_surface_dice(empty, gt, (1.0, 1.0, 1.0)) == 0.0
    assert normalized_surface_dice(gt, empty, (1.0, 1.0, 1.0)) == 0.0


@pytest.mark.parametrize("seed", range(3))
def test_nsd_cropping_matches_whole_array_reference(seed):
    rng = np.random.default_rng(seed)
    gt = ndimage.binary_dilation(rng.random((30, 26, 34)) > 0.998, iterations=3)
    pred = ndimage.binary_dilation(gt, iterations=1) ^ (rng.random(gt.shape) > 0.97)
    spacing, tol = (0.8, 1.1, 2.5), 2.0
    expected = _reference_nsd(pred, gt, spacing, tol)
    assert normalized_surface_dice(pred, gt, spacing, tol) == pytest.approx(expected)


def test_metrics_reject_bad_input():
    a = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((4, 4, 5), dtype=bool))
    with pytest.raises(ValueError, match="shape"):
        normalized_surface_dice(a, np.zeros((4, 4, 5), dtype=bool), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        normalized_surface_dice(a, a, (1.0, -1.0, 1.0))
    with pytest.raises(ValueError, match="tolerance"):
        normalized_surface_dice(a, a, (1.0, 1.0, 1.0), tolerance_mm=-1.0)
    with pytest.raises(ValueError, match="3-D"):
        normalized_surface_dice(np.zeros((4, 4)), np.zeros((4, 4)), (1.0, 1.0, 1.0))
