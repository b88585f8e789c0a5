"""Targets that start from an existing mask (``Session.set_target_mask``), e.g. a segment drawn by
hand, imported, or edited outside the engine.

The mask is the clicks' previous-mask input (the paper's iterative refinement input), and the
model's output is merged with it so that no click removes voxels it did not ask to remove:

    mask = model foreground  |  (seed - R)

where ``R`` holds the seed voxels that the model calls background (inside its patches), that are
connected (26-neighbourhood, through such voxels) to a negative click and that lie nearer to a
negative click than to every positive one. Positive clicks therefore only add; a negative click
removes the rejected part on its side, not what the model merely failed to reproduce elsewhere. Arrays are ``(z, y, x)``; clicks ``(x, y, z)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from CTSAM3DLib.aliases import IJK, BBox3D
from CTSAM3DLib.geometry.model_space import ModelGrid, extract_patch


def mask_image(mask_zyx: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """The uint8 mask as a SimpleITK image on the reference's grid (for patch resampling)."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(mask_zyx, dtype=np.uint8))
    image.CopyInformation(reference)
    return image


def prev_mask(image: sitk.Image, grid: ModelGrid, start: IJK) -> np.ndarray:
    """The mask resampled (linearly) into the model patch at ``start``: probabilities (z, y, x) float32."""
    return np.clip(extract_patch(image, grid, start), 0.0, 1.0)  # outside the image: pad (< 0) -> 0


def merge(seed_region: np.ndarray, prob: np.ndarray, clicks_xyz: Sequence[Sequence[float]],
          labels: Sequence[bool], spacing_xyz: Sequence[float]) -> np.ndarray:
    """The seeded mask inside a box (see the module rule).

    Args:
        seed_region: the seed (uint8, z, y, x) inside the box.
        prob: the model's probabilities there, NaN where no patch covers the voxel.
        clicks_xyz: the clicks as voxel (x, y, z) relative to the box's first voxel.
        labels: their polarities (True = positive).
        spacing_xyz: voxel size (mm), for distances.
    """
    covered = np.isfinite(prob)
    model = covered & (np.nan_to_num(prob, nan=0.0) >= 0.5)
    seed = seed_region > 0
    out = seed | model
    rejected = covered & ~model & seed
    clicks = np.asarray(clicks_xyz, dtype=np.float64).reshape(-1, 3)
    is_negative = ~np.asarray(labels, dtype=bool).reshape(-1)
    if not rejected.any() or not is_negative.any():
        return out.astype(np.uint8)
    components, _ = ndimage.label(rejected, structure=np.ones((3, 3, 3), dtype=bool))
    hit = {int(components[k, j, i]) for i, j, k in np.rint(clicks[is_negative]).astype(int)
           if all(0 <= v < n for v, n in zip((k, j, i), components.shape))} - {0}
    if not hit:
        return out.astype(np.uint8)
    k, j, i = np.nonzero(np.isin(components, sorted(hit)))
    scale = np.asarray(spacing_xyz, dtype=np.float64)
    distance = np.linalg.norm((np.stack([i, j, k], axis=1)[:, None, :] - clicks[None]) * scale, axis=2)  # (M, C)
    nearest_negative = distance[:, is_negative].min(axis=1)
    nearest_positive = distance[:, ~is_negative].min(axis=1) if (~is_negative).any() else np.inf
    side = nearest_negative < nearest_positive
    out[k[side], j[side], i[side]] = False
    return out.astype(np.uint8)


def changed_box(old: np.ndarray, new: np.ndarray) -> BBox3D | None:
    """Smallest box ``((i0, j0, k0), (i1, j1, k1))`` (exclusive) holding every voxel where the masks differ."""
    diff = old != new
    axes = [np.flatnonzero(diff.any(axis=other)) for other in ((0, 1), (0, 2), (1, 2))]  # x, y, z
    if not len(axes[0]):
        return None
    low = tuple(int(a[0]) for a in axes)
    high = tuple(int(a[-1]) + 1 for a in axes)
    return low, high  # type: ignore[return-value]
