"""Losses of Algorithm 1: L_seg = focal * 0.2 + Dice * 0.8 per round, L_cpp = MSE to a Gaussian.

The paper's L_cpp (plain MSE to a Gaussian at the centroid) can collapse: the Gaussian covers
about 0.1 % of a patch, so an all-zero heatmap is nearly optimal, and a centroid can fall outside
a curved organ. ``cpp_loss(..., balanced=True)`` with `deepest_point_heatmaps` fixes both.

Tensors are ``[B, 1, D, H, W]`` = ``[B, 1, z, y, x]``; masks are float 0/1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from CTSAM3DLib.prompts.heatmap import click_maps
from CTSAM3DLib.prompts.simulate import interior_depth


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
    """CPP targets (the paper): a Gaussian click map at the centroid of each mask.

    Rendered by `click_maps` with one positive click, so the target is exactly the map a click
    at that point gives the decoder (radius 8, sigma 2 voxels, peak 1).

    Args:
        gts: bool ``[B, D, H, W]`` (z, y, x) masks; an empty mask gives an all-zero target.

    Returns:
        float32 ``[B, 1, D, H, W]``.
    """
    return _maps_at(gts, lambda m: np.argwhere(m).mean(axis=0))


def deepest_point_heatmaps(gts: np.ndarray) -> torch.Tensor:
    """CPP targets: a Gaussian click map at the deepest point of each mask.

    The deepest point maximises `interior_depth` (the patch border is not background, as the
    structure may go on beyond it): an interior point, where the engine's click should land, even
    for curved or hollow structures whose centroid lies outside them. Same maps as `centroid_heatmaps`.
    """
    return _maps_at(gts, lambda m: np.unravel_index(int(np.argmax(interior_depth(m))), m.shape))


def _maps_at(gts: np.ndarray, point_zyx: Callable[[np.ndarray], Sequence[float]]) -> torch.Tensor:
    """One positive click map per non-empty mask, at ``point_zyx(mask)``; zeros for an empty mask."""
    b = gts.shape[0]
    points = np.zeros((b, 1, 3), dtype=np.float32)
    labels = np.full((b, 1), -1, dtype=np.int64)
    for i in range(b):
        if gts[i].any():
            points[i, 0] = np.asarray(point_zyx(gts[i]), dtype=np.float32)[::-1]
            labels[i, 0] = 1
    maps = click_maps(torch.from_numpy(points), torch.from_numpy(labels), tuple(gts.shape[1:]))
    return maps[:, :1]


# Target values above this count as the heatmap's peak region in the balanced CPP loss.
CPP_PEAK_LEVEL = 0.05


def cpp_loss(heatmap: torch.Tensor, target: torch.Tensor, balanced: bool = False) -> torch.Tensor:
    """L_cpp between predicted and target heatmaps ``[B, 1, D, H, W]``.

    Plain (the paper): mean squared error over all voxels. Balanced, per sample, four terms:
    the mean squared error over the target's peak region (values > `CPP_PEAK_LEVEL`) and over the
    rest, which make a flat map cost as much as a missed peak; and two on the maxima the engine
    thresholds (``cpp_min_peak``): the map's maximum inside the peak region should be 1, and
    nowhere outside it may the map exceed the target. A neighbour the structure does not reach
    (an empty target) thus gets a low maximum, not just a low average, and a spurious peak away
    from the structure is pushed down directly.
    """
    h = heatmap.float().flatten(1)
    t = target.flatten(1)
    err = (h - t) ** 2
    if not balanced:
        return err.mean()
    peak = (t > CPP_PEAK_LEVEL).float()
    n_peak = peak.sum(1)
    has_peak = n_peak > 0
    on_peak = torch.where(has_peak, (err * peak).sum(1) / n_peak.clamp_min(1), torch.zeros_like(n_peak))
    off_peak = (err * (1.0 - peak)).sum(1) / (1.0 - peak).sum(1).clamp_min(1)
    top_on = torch.where(has_peak, (h.masked_fill(peak == 0, -1e4).max(1).values - 1.0) ** 2, torch.zeros_like(n_peak))
    top_off = torch.relu((h - t).masked_fill(peak > 0, -1e4).max(1).values) ** 2
    return (on_peak + off_peak + top_on + top_off).mean()
