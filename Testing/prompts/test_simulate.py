"""Tests of the click simulator (CTSAM3DLib.prompts.simulate)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from CTSAM3DLib.prompts.click import Click
from CTSAM3DLib.prompts.simulate import deepest_click, first_click, largest_component_click, next_click


def _box_mask(shape_zyx, start_zyx, size_zyx) -> np.ndarray:
    mask = np.zeros(shape_zyx, dtype=bool)
    mask[tuple(slice(s, s + n) for s, n in zip(start_zyx, size_zyx))] = True
    return mask


def _reference_click(pred, gt, spacing_xyz):
    """Whole-volume reference: EDT of each error region padded by one background voxel."""
    sampling = spacing_xyz[::-1]
    total = np.zeros(gt.shape)
    for region in (gt & ~pred, pred & ~gt):
        padded = np.pad(region, 1)
        total += ndimage.distance_transform_edt(padded, sampling=sampling)[1:-1, 1:-1, 1:-1]
    if not total.any():
        return None
    z, y, x = np.unravel_index(int(np.argmax(total)), gt.shape)
    return Click((float(x), float(y), float(z)), bool(gt[z, y, x]))


def test_positive_click_at_centre_of_largest_false_negative():
    gt = _box_mask((20, 20, 20), (2, 2, 2), (9, 9, 9))
    pred = _box_mask((20, 20, 20), (13, 13, 13), (5, 5, 5))  # a smaller false positive
    click = next_click(pred, gt)
    assert click == Click((6.0, 6.0, 6.0), True)


def test_negative_click_at_centre_of_largest_false_positive():
    gt = _box_mask((20, 20, 20), (13, 13, 13), (5, 5, 5))
    pred = _box_mask((20, 20, 20), (2, 2, 2), (9, 9, 9))
    click = next_click(pred, gt)
    assert click == Click((6.0, 6.0, 6.0), False)


def test_anisotropic_spacing_changes_the_winner():
    # FN box is thin along z (5 voxels), FP box a 7-voxel cube.
    gt = _box_mask((30, 30, 30), (1, 1, 1), (5, 11, 11))
    pred = _box_mask((30, 30, 30), (12, 15, 12), (7, 7, 7))
    # Isotropic: FN depth 3 mm < FP depth 4 mm -> negative click at the FP centre.
    assert next_click(pred, gt, (1.0, 1.0, 1.0)) == Click((15.0, 18.0, 15.0), False)
    # z spacing 2 mm: FN depth min(3*2, 6, 6) = 6 mm > FP depth 4 mm -> positive click.
    assert next_click(pred, gt, (1.0, 1.0, 2.0)) == Click((6.0, 6.0, 3.0), True)


def test_array_border_counts_as_boundary():
    gt = _box_mask((8, 9, 10), (0, 0, 0), (4, 9, 10))  # slab touching five faces
    click = next_click(np.zeros_like(gt), gt)
    assert click is not None and click.is_positive
    # Depth along z is 1, 2, 2, 1 for z = 0..3 once the border is boundary; first argmax is z = 1.
    assert click.point_xyz[2] == 1.0


def test_full_array_error_clicks_at_centre():
    gt = np.ones((5, 5, 5), dtype=bool)
    assert next_click(np.zeros_like(gt), gt) == Click((2.0, 2.0, 2.0), True)


def test_ties_go_to_first_voxel_in_c_order():
    late = _box_mask((20, 20, 20), (10, 2, 2), (3, 3, 3))  # centre z=11, y=3, x=3
    early = _box_mask((20, 20, 20), (2, 10, 10), (3, 3, 3))  # centre z=3, y=11, x=11
    assert next_click(np.zeros_like(late), late | early) == Click((11.0, 11.0, 3.0), True)
    # FN and FP of equal depth: the one earlier in C order (smaller z) wins.
    assert next_click(early, late) == Click((11.0, 11.0, 3.0), False)


def test_point_is_xyz_of_a_zyx_array():
    gt = np.zeros((4, 5, 6), dtype=bool)
    gt[1, 2, 3] = True  # z=1, y=2, x=3
    assert next_click(np.zeros_like(gt), gt) == Click((3.0, 2.0, 1.0), True)
    assert first_click(gt, np.random.default_rng(0)) == Click((3.0, 2.0, 1.0), True)


@pytest.mark.parametrize("seed", range(4))
def test_matches_whole_volume_reference(seed):
    rng = np.random.default_rng(seed)
    gt = ndimage.binary_dilation(rng.random((24, 20, 28)) > 0.995, iterations=3)
    pred = ndimage.binary_dilation(rng.random((24, 20, 28)) > 0.995, iterations=2)
    spacing = (0.8, 1.0, 2.5)
    assert next_click(pred, gt, spacing) == _reference_click(pred, gt, spacing)


def test_none_when_prediction_is_perfect():
    gt = _box_mask((10, 10, 10), (2, 2, 2), (4, 4, 4))
    assert next_click(gt.copy(), gt) is None
    empty = np.zeros((10, 10, 10), dtype=bool)
    assert next_click(empty, empty) is None


def test_accepts_non_bool_masks():
    gt = _box_mask((10, 10, 10), (2, 2, 2), (5, 5, 5)).astype(np.uint8)
    assert next_click(np.zeros_like(gt), gt) == Click((4.0, 4.0, 4.0), True)


def test_next_click_rejects_bad_input():
    gt = np.zeros((4, 4, 4), dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        next_click(np.zeros((4, 4, 5), dtype=bool), gt)
    with pytest.raises(ValueError, match="3-D"):
        next_click(np.zeros((4, 4), dtype=bool), np.zeros((4, 4), dtype=bool))
    with pytest.raises(ValueError, match="spacing"):
        next_click(gt, gt, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="spacing"):
        next_click(gt, gt, (1.0, 1.0))


def test_first_click_is_inside_and_reproducible():
    gt = _box_mask((16, 16, 16), (3, 5, 7), (4, 3, 6))
    clicks = [first_click(gt, np.random.default_rng(123)) for _ in range(2)]
    assert clicks[0] == clicks[1]
    rng = np.random.default_rng(7)
    drawn = {first_click(gt, rng).point_xyz for _ in range(200)}
    for x, y, z in drawn:
        assert gt[int(z), int(y), int(x)]
    assert len(drawn) > 20  # spread over the 72 foreground voxels, not a fixed point
    assert all(first_click(gt, rng).is_positive for _ in range(5))


def test_first_click_rejects_empty_mask():
    with pytest.raises(ValueError, match="non-empty"):
        first_click(np.zeros((4, 4, 4), dtype=bool), np.random.default_rng(0))


def test_deepest_click_treats_the_scan_edge_as_boundary():
    gt = np.zeros((20, 10, 10), dtype=bool)
    gt[4:, 2:8, 2:8] = True  # an organ the scan cuts at z = 19
    click = deepest_click(gt, (1.0, 1.0, 1.0))
    assert click.is_positive and gt[int(click.point_xyz[2]), int(click.point_xyz[1]), int(click.point_xyz[0])]
    assert click.point_xyz[2] < 17  # not on the last slices, where a plain distance map puts it
    with pytest.raises(ValueError, match="non-empty"):
        deepest_click(np.zeros((5, 5, 5), dtype=bool))


def test_largest_component_click_prefers_the_biggest_error_over_the_deepest():
    gt = np.zeros((20, 40, 40), dtype=bool)
    gt[5:15, 5:15, 5:15] = True  # a cube: deep but 1,000 voxels
    gt[2:4, 20:38, 2:38] = True  # a thin slab: shallow but 1,296 voxels
    click = largest_component_click(np.zeros_like(gt), gt, (1.0, 1.0, 1.0))
    assert click.is_positive and 2 <= click.point_xyz[2] <= 3 and click.point_xyz[1] >= 20
    assert next_click(np.zeros_like(gt), gt, (1.0, 1.0, 1.0)).point_xyz[2] >= 5  # the paper's rule: the cube
    pred = gt.copy()
    pred[10:14, 25:39, 25:39] = True  # a false positive (784 voxels) larger than anything missed
    pred[2:4, 20:38, 2:10] = False  # 288 false-negative voxels
    click = largest_component_click(pred, gt, (1.0, 1.0, 1.0))
    assert not click.is_positive and gt[tuple(int(v) for v in click.point_xyz[::-1])] == 0
    assert largest_component_click(gt, gt, (1.0, 1.0, 1.0)) is None


def test_largest_component_click_joins_diagonal_neighbours():
    gt = np.zeros((10, 10, 10), dtype=bool)
    for i in range(9):
        gt[i + 1, i + 1, i + 1] = True  # a 26-connected diagonal line of 9 voxels (9 components if 6-connected)
    gt[1:3, 6:8, 1:3] = True  # a 2x2x2 blob of 8 voxels
    click = largest_component_click(np.zeros_like(gt), gt, (1.0, 1.0, 1.0))
    assert click is not None and click.point_xyz[0] == click.point_xyz[1] == click.point_xyz[2]  # on the diagonal
