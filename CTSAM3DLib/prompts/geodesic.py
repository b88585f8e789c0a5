"""Geodesic click maps: image-aware prompts for the ``compact_geo`` variant.

A Gaussian click map says "near this voxel"; a geodesic map says "reachable from this voxel
without crossing an edge" (DeepIGeoS, MIDeepSeg), which carries a click across a homogeneous
organ of any shape, including organs the network never saw. The distance from the clicks is

    d(v) = min over 6-connected paths c -> v of  sum sqrt(alpha^2 + (beta * |I(p) - I(q)|)^2)

(``alpha`` per voxel step, ``beta`` per unit of scaled intensity), computed by raster scans
(forward and backward along z, y, x, repeated ``sweeps`` times) on the patch average-pooled
to 32^3: the decoder's finest modulated stage is 32^3, and pooling also quiets the noise.
The maps fed to the decoder are ``exp(-d / tau)`` for positive and negative clicks (1 at a
click, 0 without clicks), upsampled to the patch.

Written in torch rather than with a compiled package (FastGeodis, GeodisTK): the scans are
~6 * 32 vectorised slice updates, run on the patch's device inside the click budget, train
with the model on CPU or CUDA, and need nothing beyond torch to install (Slicer included).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The three constants were chosen on training structures only (10 organs, muscles and bones of the
# training CTs, one click at each one's deepest point): a threshold of exp(-d / TAU) then matches
# the structure in its patch with mean Dice 0.69 (0.64 with alpha 0.05, beta 10, tau 2).
# Cost of one voxel step at the 32^3 working grid (3 mm voxels for the model's 1.5 mm patch).
ALPHA = 0.01
# Cost per unit of intensity change (the window scaled to [0, 1]).
BETA = 20.0
# Decay of the map: exp(-d / TAU).
TAU = 4.0
# Forward/backward scans per axis.
SWEEPS = 2
# Pooling factor from the patch to the working grid.
POOL = 2


def geodesic_distance(image: torch.Tensor, seeds: torch.Tensor, alpha: float = ALPHA, beta: float = BETA,
                      sweeps: int = SWEEPS) -> torch.Tensor:
    """Geodesic distance ``[B, D, H, W]`` from the ``True`` voxels of ``seeds``.

    Args:
        image: float ``[B, D, H, W]`` intensities (scaled to [0, 1]).
        seeds: bool ``[B, D, H, W]``; a batch item without seeds gets ``inf`` everywhere.
        alpha: cost of a step in a flat region.
        beta: cost per unit of intensity change.
        sweeps: raster-scan repetitions (2 settle all but very winding paths).
    """
    if image.shape != seeds.shape or image.ndim != 4:
        raise ValueError(f"image and seeds must both be [B, D, H, W]; got {tuple(image.shape)} and {tuple(seeds.shape)}")
    image = image.float()
    dist = torch.full_like(image, float("inf")).masked_fill(seeds, 0.0)
    # per axis, the slices of the distance (views, updated in place) and of the step costs between
    # them, unbound once: indexing a slice per update cost as much as the update itself
    axes = []
    for axis in (1, 2, 3):
        step = torch.sqrt(alpha**2 + (beta * image.diff(dim=axis)).square())
        axes.append((dist.movedim(axis, 0).unbind(0), step.movedim(axis, 0).unbind(0)))
    for _ in range(sweeps):
        for d, s in axes:
            reached = torch.empty_like(d[0])
            for i in range(1, len(d)):
                torch.minimum(d[i], torch.add(d[i - 1], s[i - 1], out=reached), out=d[i])
            for i in range(len(d) - 2, -1, -1):
                torch.minimum(d[i], torch.add(d[i + 1], s[i], out=reached), out=d[i])
    return dist


def geodesic_maps(image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, tau: float = TAU) -> torch.Tensor:
    """Positive and negative geodesic maps ``[B, 2, D, H, W]`` in [0, 1] for a batch of patches.

    Args:
        image: float ``[B, 1, D, H, W]`` patch scaled to [0, 1] (D, H, W divisible by 2).
        points: float ``[B, N, 3]`` voxel ``(x, y, z)`` in the patch.
        labels: int ``[B, N]``; 1 positive, 0 negative, -1 ignored.
        tau: decay length of ``exp(-d / tau)``.
    """
    if image.ndim != 5 or image.shape[1] != 1 or points.shape[:1] != image.shape[:1]:
        raise ValueError(f"image must be [B,1,D,H,W] with points [B,N,3]; got {tuple(image.shape)}, "
                         f"{tuple(points.shape)}")
    small = F.avg_pool3d(image.float(), POOL)[:, 0]
    size = torch.tensor(small.shape[1:], device=points.device)
    zyx = (torch.round(points.detach().float()).long().flip(-1) // POOL).clamp(min=0)
    zyx = torch.minimum(zyx, size - 1).to(image.device)
    labels = labels.to(image.device)
    out = image.new_zeros((image.shape[0], 2, *image.shape[2:]), dtype=torch.float32)
    for channel, positive in enumerate((1, 0)):
        b, n = torch.nonzero(labels == positive, as_tuple=True)
        if not len(b):  # no click of this sign anywhere (a first click has no negative one): exp(-inf) = 0
            continue
        seeds = torch.zeros_like(small, dtype=torch.bool)
        seeds[b, zyx[b, n, 0], zyx[b, n, 1], zyx[b, n, 2]] = True
        small_map = torch.exp(-geodesic_distance(small, seeds) / tau)[:, None]
        out[:, channel:channel + 1] = F.interpolate(small_map, size=image.shape[2:], mode="trilinear", align_corners=False)
    return out
