"""Losses of Algorithm 1: L_seg = focal * 0.2 + Dice * 0.8 per round, L_cpp = MSE to a Gaussian.

Tensors are ``[B, 1, D, H, W]`` = ``[B, 1, z, y, x]``; masks are float 0/1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from CTSAM3DLib.prompts.heatmap import click_maps


def focal_loss(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """Sigmoid focal loss (Lin et al. 2017, no alpha), mean over all voxels.

    Args:
        logits: ``[B, 1, D, H, W]`` raw scores.
        target: same shape, 0/1.
        gamma: focusing exponent (0 gives binary cross-entropy).
    """
    logits = logits.float()
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if gamma == 0:
        return bce.mean()
    p_t = torch.exp(-bce)  # probability of the true class
    return ((1.0 - p_t) ** gamma * bce).mean()


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice loss ``1 - (2 |p t| + s) / (|p| + |t| + s)`` per sample, averaged over the batch.

    Args:
        logits: ``[B, 1, D, H, W]`` raw scores (sigmoid applied here).
        target: same shape, 0/1.
        smooth: additive smoothing (keeps empty targets finite).
    """
    p = torch.sigmoid(logits.float()).flatten(1)
    t = target.flatten(1)
    inter = (p * t).sum(1)
    return (1.0 - (2.0 * inter + smooth) / (p.sum(1) + t.sum(1) + smooth)).mean()


def seg_loss(logits: torch.Tensor, target: torch.Tensor, focal_weight: float = 0.2, dice_weight: float = 0.8,
             gamma: float = 2.0) -> torch.Tensor:
    """The paper's L_seg: ``focal_weight * focal + dice_weight * Dice``."""
    return focal_weight * focal_loss(logits, target, gamma) + dice_weight * dice_loss(logits, target)


def centroid_heatmaps(gts: np.ndarray) -> torch.Tensor:
    """CPP targets: a Gaussian click map at the centroid of each mask.

    Rendered by `click_maps` with one positive click, so the target is exactly the map a click
    at that point gives the decoder (radius 8, sigma 2 voxels, peak 1).

    Args:
        gts: bool ``[B, D, H, W]`` (z, y, x) masks; an empty mask gives an all-zero target.

    Returns:
        float32 ``[B, 1, D, H, W]``.
    """
    b = gts.shape[0]
    points = np.zeros((b, 1, 3), dtype=np.float32)
    labels = np.full((b, 1), -1, dtype=np.int64)
    for i in range(b):
        zyx = np.argwhere(gts[i])
        if len(zyx):
            points[i, 0] = zyx.mean(axis=0)[::-1]
            labels[i, 0] = 1
    maps = click_maps(torch.from_numpy(points), torch.from_numpy(labels), tuple(gts.shape[1:]))
    return maps[:, :1]


def cpp_loss(heatmap: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """L_cpp: mean squared error between predicted and target heatmaps ``[B, 1, D, H, W]``."""
    return F.mse_loss(heatmap.float(), target)
