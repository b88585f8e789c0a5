"""Tests of the training losses and the CPP target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from CTSAM3DLib.prompts.heatmap import click_maps, gaussian_kernel
from CTSAM3DLib.train.losses import centroid_heatmaps, cpp_loss, dice_loss, focal_loss, seg_loss


def test_centroid_target_is_the_click_map_at_the_centroid() -> None:
    gts = np.zeros((2, 32, 32, 32), bool)
    gts[0, 12:17, 10:15, 20:27] = True  # centroid (x, y, z) = (23, 12, 14)
    target = centroid_heatmaps(gts)
    assert target.shape == (2, 1, 32, 32, 32)
    expected = click_maps(torch.tensor([[[23.0, 12.0, 14.0]]]), torch.tensor([[1]]), 32)[:, :1]
    torch.testing.assert_close(target[:1], expected)
    assert float(target[0, 0, 14, 12, 23]) == 1.0
    assert abs(float(target[0].sum()) - float(gaussian_kernel().sum())) < 1e-3
    assert target[1].abs().sum() == 0  # empty mask: no target peak


def test_focal_dice_and_mse() -> None:
    t = (torch.rand(2, 1, 8, 8, 8) > 0.5).float()
    logits = torch.randn(2, 1, 8, 8, 8)
    torch.testing.assert_close(focal_loss(logits, t, gamma=0.0), F.binary_cross_entropy_with_logits(logits, t))
    assert focal_loss(logits, t, 2.0) < focal_loss(logits, t, 0.0)
    perfect = (t * 2 - 1) * 20
    assert float(dice_loss(perfect, t)) < 1e-3 and float(seg_loss(perfect, t)) < 1e-3
    assert float(dice_loss(-perfect, t)) > 0.9
    assert float(cpp_loss(t, t)) == 0.0


def test_deepest_point_lies_inside_a_curved_structure() -> None:
    from CTSAM3DLib.train.losses import deepest_point_heatmaps

    zz, yy, xx = np.meshgrid(*[np.arange(32)] * 3, indexing="ij")
    r = np.sqrt((xx - 16.0) ** 2 + (yy - 16.0) ** 2)
    ring = (r > 8) & (r < 14) & (zz > 4) & (zz < 28)  # a tube: its centroid (16, 16) is in the hole
    gts = np.stack([ring, np.zeros_like(ring)])
    target = deepest_point_heatmaps(gts)
    peak = np.unravel_index(int(target[0, 0].argmax()), ring.shape)
    assert ring[peak] and float(target[0, 0].max()) == 1.0
    assert not ring[tuple(int(round(v)) for v in np.argwhere(ring).mean(axis=0))]  # the centroid is outside
    assert float(target[1].abs().sum()) == 0.0


def test_balanced_cpp_loss_does_not_reward_a_flat_map() -> None:
    target = click_maps(torch.tensor([[[20.0, 20.0, 20.0]]]), torch.tensor([[1]]), 64)[:, :1]
    flat = torch.zeros_like(target)
    right = target.clone()
    plain_flat, plain_right = float(cpp_loss(flat, target)), float(cpp_loss(right, target))
    assert plain_flat < 1e-3  # the collapse: plain MSE barely penalises predicting nothing
    bal_flat, bal_right = float(cpp_loss(flat, target, balanced=True)), float(cpp_loss(right, target, balanced=True))
    assert bal_right == 0.0 and bal_flat > 1.0 and bal_flat > 100 * plain_flat
    # an empty target (no continuation): only the off-peak term, which a raised map pays for
    empty = torch.zeros_like(target)
    assert float(cpp_loss(torch.full_like(target, 0.5), empty, balanced=True)) == pytest.approx(0.25 + 0.25)
