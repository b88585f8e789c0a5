"""Tests of the training losses and the CPP target."""

from __future__ import annotations

import numpy as np
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
