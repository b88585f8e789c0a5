"""Click simulator: the ONE place that turns (prediction, ground truth) into clicks.

Shared by training (64^3 patches, several clicks per sample) and evaluation
(whole volumes on the input grid), so both follow the same protocol:

1. :func:`first_click`: a positive click on a foreground voxel drawn uniformly at
   random, the protocol of the CT-SAM3D paper.
2. :func:`next_click`: afterwards, the voxel of the current error region
   (false negatives ``gt & ~pred`` or false positives ``pred & ~gt``) that lies
   farthest from that region's boundary, in mm. It is positive when it falls in a
   false negative, negative when it falls in a false positive. This is the
   CT-SAM3D paper's protocol and the standard RITM / SAM-style interactive
   evaluation protocol (the "center" of the largest error).
3. :func:`largest_component_click`: the click rule of the CVPR 2025 interactive 3-D
   segmentation challenge, offered for comparable numbers: the deepest voxel of the
   largest 26-connected component of the error (false negatives and false positives
   labelled apart), so a large thin error beats a small deep one.

Arrays are ``(z, y, x)``; clicks are voxel ``(x, y, z)`` (see :class:`Click`);
spacing is ``(x, y, z)`` in mm, as everywhere in CTSAM3DLib.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from CTSAM3DLib.prompts.click import Click

logger = logging.getLogger(__name__)

# A 3-D index box as one slice per array axis (z, y, x).
_Box = tuple[slice, slice, slice]


def first_click(gt: np.ndarray, rng: np.random.Generator) -> Click:
    """Draws the first click uniformly among the foreground voxels.

    Args:
        gt: Ground-truth mask, shape ``(z, y, x)``, bool (non-zero = foreground).
        rng: Random generator; the same seed gives the same click.

    Returns:
        A positive :class:`Click` at voxel ``(x, y, z)`` of ``gt``.

    Raises:
        ValueError: If ``gt`` is not 3-D or has no foreground voxel.
    """
    gt = _as_mask(gt, "gt")
    flat = np.flatnonzero(gt)
    if flat.size == 0:
        raise ValueError("first_click needs a non-empty ground-truth mask")
    z, y, x = np.unravel_index(flat[rng.integers(flat.size)], gt.shape)
    return Click(point_xyz=(float(x), float(y), float(z)), is_positive=True)


def deepest_click(gt: np.ndarray, spacing_mm: Sequence[float] = (1.0, 1.0, 1.0)) -> Click:
    """A positive click at the structure's deepest voxel: what a user aims for.

    Deepest in mm from the structure's boundary *or the array border* (`next_click` on an
    empty prediction), so an organ the scan cuts is not clicked on its last slice.

    Raises:
        ValueError: If ``gt`` is not 3-D or has no foreground voxel.
    """
    click = next_click(np.zeros_like(_as_mask(gt, "gt")), gt, spacing_mm)
    if click is None:
        raise ValueError("deepest_click needs a non-empty ground-truth mask")
    return click


def next_click(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
) -> Click | None:
    """Places the next corrective click at the deepest point of the error.

    The false-negative (``gt & ~pred``) and false-positive (``pred & ~gt``)
    regions each get a Euclidean distance transform in mm (anisotropic
    ``spacing_mm``), where every voxel outside the region *and the array
    border* count as boundary. The voxel with the largest distance over both
    regions wins; ties go to the first one in C order of the ``(z, y, x)``
    array. Only the bounding box of each region (plus one voxel) is
    transformed, so small errors in large volumes are cheap.

    Args:
        pred: Predicted mask, shape ``(z, y, x)``, bool (non-zero = foreground).
        gt: Ground-truth mask, same shape as ``pred``.
        spacing_mm: Voxel size ``(x, y, z)`` in mm.

    Returns:
        A :class:`Click` at voxel ``(x, y, z)``, positive if the chosen voxel is
        a false negative and negative if it is a false positive; ``None`` when
        ``pred`` equals ``gt``.

    Raises:
        ValueError: If the masks are not 3-D, differ in shape, or the spacing is
            not three positive finite numbers.
    """
    pred = _as_mask(pred, "pred")
    gt = _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    sampling_zyx = _sampling_zyx(spacing_mm)
    best: tuple[float, int, bool] | None = None  # (distance, flat index, is_positive)
    for region, is_positive in ((gt & ~pred, True), (pred & ~gt, False)):
        found = _deepest_voxel(region, sampling_zyx)
        if found is None:
            continue
        candidate = (found[0], found[1], is_positive)
        if best is None or (candidate[0], -candidate[1]) > (best[0], -best[1]):
            best = candidate
    if best is None:
        return None
    z, y, x = np.unravel_index(best[1], gt.shape)
    return Click(point_xyz=(float(x), float(y), float(z)), is_positive=best[2])


def largest_component_click(
    pred: np.ndarray,
    gt: np.ndarray,
    spacing_mm: Sequence[float] = (1.0, 1.0, 1.0),
) -> Click | None:
    """The next click by the CVPR 2025 challenge rule: the largest error component's deepest voxel.

    False negatives and false positives are split into 26-connected components; the one with
    the most voxels wins (ties: false negatives first, then the lower label), and the click goes
    to its voxel farthest in mm from its boundary or the array border, as in `next_click`. On an
    empty prediction this is the deepest voxel of the structure's largest component (the rule's
    first click).

    Args:
        pred: Predicted mask ``(z, y, x)`` (non-zero = foreground).
        gt: Ground-truth mask, same shape.
        spacing_mm: Voxel size ``(x, y, z)`` in mm.

    Returns:
        A positive click in a false negative, a negative one in a false positive; ``None`` when
        ``pred`` equals ``gt``.
    """
    pred = _as_mask(pred, "pred")
    gt = _as_mask(gt, "gt")
    if pred.shape != gt.shape:
        raise ValueError(f"pred shape {pred.shape} differs from gt shape {gt.shape}")
    sampling_zyx = _sampling_zyx(spacing_mm)
    best: tuple[int, bool, np.ndarray] | None = None  # (voxels, is_positive, component mask)
    for region, is_positive in ((gt & ~pred, True), (pred & ~gt, False)):
        box = _bounding_box(region)
        if box is None:
            continue
        labels, _ = ndimage.label(region[box], structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(labels.ravel())[1:]
        top = int(np.argmax(sizes))
        if best is None or sizes[top] > best[0]:
            component = np.zeros_like(region)
            component[box] = labels == top + 1
            best = (int(sizes[top]), is_positive, component)
    if best is None:
        return None
    found = _deepest_voxel(best[2], sampling_zyx)
    assert found is not None  # the component has at least one voxel
    z, y, x = np.unravel_index(found[1], gt.shape)
    return Click(point_xyz=(float(x), float(y), float(z)), is_positive=best[1])


def interior_depth(mask: np.ndarray) -> np.ndarray:
    """In-mask Euclidean distance (voxels) to the nearest background voxel of a patch ``(z, y, x)``.

    Unlike the simulator's error regions, the array border is not background: a structure cut by
    a patch border may go on beyond it. A mask without background is uniformly 1, an empty one 0.
    Used to pick interior points of a structure in a patch (CPP targets and the network-free CPP).
    Only the foreground's bounding box plus one voxel is transformed (same values: a foreground
    voxel's nearest background voxel lies within that shell), so a small change or structure costs
    a distance transform of its box, not of the whole patch (the engine runs this on every click).
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.all():
        return np.ones(mask.shape, dtype=np.float64)
    depth = np.zeros(mask.shape, dtype=np.float64)
    box = _bounding_box(mask)
    if box is not None:
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, mask.shape))
        depth[grown] = ndimage.distance_transform_edt(mask[grown])
    return depth


def _deepest_voxel(
    region: np.ndarray, sampling_zyx: tuple[float, float, float]
) -> tuple[float, int] | None:
    """Returns (distance in mm, flat index in ``region``) of the deepest voxel.

    Args:
        region: Bool mask, shape ``(z, y, x)``.
        sampling_zyx: Voxel size in mm in array order ``(z, y, x)``.

    Returns:
        ``None`` if the region is empty. Among equal distances the first voxel in
        C order of the full array wins (C order inside the box agrees with it).
    """
    box = _bounding_box(region)
    if box is None:
        return None
    padded = np.pad(region[box], 1, mode="constant", constant_values=False)
    dist = ndimage.distance_transform_edt(padded, sampling=sampling_zyx)[1:-1, 1:-1, 1:-1]
    local = int(np.argmax(dist))
    local_zyx = np.unravel_index(local, dist.shape)
    global_zyx = tuple(int(i) + s.start for i, s in zip(local_zyx, box))
    return float(dist.flat[local]), int(np.ravel_multi_index(global_zyx, region.shape))


def _bounding_box(mask: np.ndarray) -> _Box | None:
    """Tight bounding box of the non-zero voxels of a ``(z, y, x)`` mask.

    Args:
        mask: Array of shape ``(z, y, x)``; non-zero = inside.

    Returns:
        One ``slice`` per axis ``(z, y, x)`` (stop exclusive), or ``None`` if the
        mask is empty.
    """
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(np.any(mask, axis=other))
        if hits.size == 0:
            return None
        slices.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return (slices[0], slices[1], slices[2])


def _as_mask(array: np.ndarray, name: str) -> np.ndarray:
    """Validates a 3-D mask and returns it as a bool array (no copy if already bool)."""
    array = np.asarray(array)
    if array.ndim != 3:
        raise ValueError(f"{name} must be a 3-D (z, y, x) array, got shape {array.shape}")
    return array if array.dtype == np.bool_ else array != 0


def _sampling_zyx(spacing_mm: Sequence[float]) -> tuple[float, float, float]:
    """Validates a spacing ``(x, y, z)`` in mm and returns it in array order ``(z, y, x)``."""
    values = tuple(float(s) for s in spacing_mm)
    if len(values) != 3 or not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing_mm must be three positive numbers (x, y, z), got {spacing_mm!r}")
    return (values[2], values[1], values[0])
