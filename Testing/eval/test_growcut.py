"""Tests of the Grow-from-seeds baseline (CTSAM3DLib.eval.growcut)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from CTSAM3DLib.eval import growcut
from CTSAM3DLib.eval.growcut import BACKGROUND_LABEL, FOREGROUND_LABEL, grow_from_seeds
from CTSAM3DLib.eval.metrics import dice
from CTSAM3DLib.prompts.click import Click

_SIZE = 64


def _needs_slicer_core() -> None:
    pytest.importorskip("slicer_core", reason="slicer-core (growcut extra) is not installed")


def _ball(centre_xyz, radius: float) -> np.ndarray:
    z, y, x = np.mgrid[:_SIZE, :_SIZE, :_SIZE]
    cx, cy, cz = centre_xyz
    return (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2


def _ct(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    """HU 200 structure in a -100 HU background with Gaussian noise (sigma 20 HU)."""
    rng = np.random.default_rng(seed)
    return (np.where(mask, 200.0, -100.0) + rng.normal(0.0, 20.0, mask.shape)).astype(np.int16)


def test_segments_bright_sphere_from_one_click():
    _needs_slicer_core()
    gt = _ball((32, 30, 33), 10)
    mask = grow_from_seeds(_ct(gt), (1.0, 1.0, 1.0), [Click((32.0, 30.0, 33.0), True)])
    assert mask.dtype == np.bool_ and mask.shape == gt.shape
    assert dice(mask, gt) > 0.9


def test_negative_click_region_ends_as_background():
    _needs_slicer_core()
    # Two bright balls joined by a thin bright bridge along x.
    ball_a, ball_b = _ball((24, 32, 32), 7), _ball((40, 32, 32), 7)
    z, y, x = np.mgrid[:_SIZE, :_SIZE, :_SIZE]
    bridge = (abs(y - 32) <= 2) & (abs(z - 32) <= 2) & (x >= 24) & (x <= 40)
    image = _ct(ball_a | ball_b | bridge)
    positive = Click((24.0, 32.0, 32.0), True)
    # ROI margin 30 mm keeps ball B well inside the ROI.
    without = grow_from_seeds(image, (1.0, 1.0, 1.0), [positive], roi_margin_mm=30.0)
    assert without[ball_b].mean() > 0.9  # B leaks in through the bridge
    negative = Click((40.0, 32.0, 32.0), False)
    with_neg = grow_from_seeds(image, (1.0, 1.0, 1.0), [positive, negative], roi_margin_mm=30.0)
    assert with_neg[ball_b].mean() < 0.1
    assert with_neg[ball_a].mean() > 0.9


def test_result_stays_inside_the_roi():
    _needs_slicer_core()
    z, y, x = np.mgrid[:_SIZE, :_SIZE, :_SIZE]
    rod = (abs(y - 32) <= 3) & (abs(z - 32) <= 3)  # bright rod spanning the whole x range
    mask = grow_from_seeds(_ct(rod), (1.0, 1.0, 1.0), [Click((32.0, 32.0, 32.0), True)], 10.0)
    # ROI x range = 32 +- 10 voxels; its shell at x = 22 and x = 42 is background seed,
    # so the rod is cut there (the two seeds race along the rod in between).
    assert mask[32, 32, 30:35].all()
    assert not mask[:, :, :23].any() and not mask[:, :, 42:].any()


def test_seed_labels_shell_and_balls():
    sampling_zyx = (3.0, 1.0, 1.0)  # z spacing 3 mm: the 2 mm ball is flat in z
    box = (slice(0, 9), slice(0, 12), slice(0, 12))
    clicks = [((4, 5, 5), True), ((4, 8, 8), False)]
    seeds = growcut._seed_labels(box, sampling_zyx, clicks)
    assert seeds.shape == (9, 12, 12) and seeds.dtype == np.uint8
    shell = np.ones(seeds.shape, dtype=bool)
    shell[1:-1, 1:-1, 1:-1] = False
    assert (seeds[shell] == BACKGROUND_LABEL).all()
    assert seeds[4, 5, 5] == FOREGROUND_LABEL and seeds[4, 8, 8] == BACKGROUND_LABEL
    # 2 mm ball at 1 mm in-plane spacing: 13 voxels in the click's slice, none in z +- 1.
    assert (seeds[4] == FOREGROUND_LABEL).sum() == 13
    assert (seeds[3] == FOREGROUND_LABEL).sum() == 0 and (seeds[5] == FOREGROUND_LABEL).sum() == 0
    assert seeds[4, 5, 7] == FOREGROUND_LABEL and seeds[4, 6, 7] == 0  # sqrt(5) mm > 2 mm
    interior = seeds[1:-1, 1:-1, 1:-1]
    assert (interior == BACKGROUND_LABEL).sum() == 13  # only the negative ball inside
    # A later click overrides an earlier one where their balls overlap.
    both = growcut._seed_labels(box, sampling_zyx, [((4, 5, 5), True), ((4, 5, 6), False)])
    assert both[4, 5, 5] == BACKGROUND_LABEL


def test_roi_box_grows_with_margin_and_click_spread_and_is_clipped():
    sampling_zyx = (2.0, 1.0, 1.0)
    one = [((20, 30, 30), True), ((0, 0, 0), False)]  # negative clicks do not enlarge the ROI
    box = growcut._roi_box((40, 64, 64), sampling_zyx, one, roi_margin_mm=10.0)
    assert box == (slice(15, 26), slice(20, 41), slice(20, 41))
    # Two positives 20 mm apart in x: margin 10 + 0.5 * 20 = 20 mm per side.
    two = [((20, 30, 20), True), ((20, 30, 40), True)]
    box = growcut._roi_box((40, 64, 64), sampling_zyx, two, roi_margin_mm=10.0)
    assert box == (slice(10, 31), slice(10, 51), slice(0, 61))


def test_no_positive_click_gives_empty_mask():
    image = np.zeros((8, 8, 8), dtype=np.int16)
    assert not grow_from_seeds(image, (1.0, 1.0, 1.0), []).any()
    assert not grow_from_seeds(image, (1.0, 1.0, 1.0), [Click((4.0, 4.0, 4.0), False)]).any()


def test_rejects_bad_input():
    image = np.zeros((8, 9, 10), dtype=np.int16)
    with pytest.raises(ValueError, match="outside"):
        grow_from_seeds(image, (1.0, 1.0, 1.0), [Click((9.6, 0.0, 0.0), True)])
    with pytest.raises(ValueError, match="spacing"):
        grow_from_seeds(image, (1.0, 1.0), [Click((1.0, 1.0, 1.0), True)])
    with pytest.raises(ValueError, match="roi_margin_mm"):
        grow_from_seeds(image, (1.0, 1.0, 1.0), [Click((1.0, 1.0, 1.0), True)], -1.0)
    with pytest.raises(ValueError, match="3-D"):
        grow_from_seeds(np.zeros((8, 8)), (1.0, 1.0, 1.0), [])


def test_missing_slicer_core_raises_helpful_import_error(monkeypatch):
    for name in growcut._GROWCUT_MODULES:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` fail
    image = np.zeros((8, 8, 8), dtype=np.int16)
    with pytest.raises(ImportError, match=r"pip install 'CTSAM3DLib\[growcut\]'"):
        grow_from_seeds(image, (1.0, 1.0, 1.0), [Click((4.0, 4.0, 4.0), True)])
