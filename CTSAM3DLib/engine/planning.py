"""Patch planning and blending: where patches go, when CPP expands, how overlaps merge.

Policy (documented in docs/engine.md, "How CPP expansion works"):
- A click inside the core of an existing patch of the target (at least ``CORE_MARGIN``
  voxels from its border) refines that patch; otherwise a positive click gets a new patch
  centred on it, moved inside the scan where it would reach past the scan's edge (the click
  stays ``NEW_PATCH_MARGIN`` voxels inside; `new_patch_start`). A positive click then expands
  (CPP) from its patch into uncovered neighbours its mask reaches, a re-click included; a
  negative click refines the existing patch that holds it nearest its centre: it corrects a
  leak, so it never opens new patches. Every other patch that holds the click and predicts it
  wrongly is refined with it (``disagreeing``).
- A click's correction spreads: where the region a click added to a patch (positive) or removed
  from it (negative) reaches into another patch that still calls it the other way (at least
  ``min_depth`` voxels deep in the slab they share), that patch gets a click of the same sign at
  the region's deepest point there (`spread_clicks`), ring by ring, so one correction reaches
  every patch the structure or its leak runs through (``min_depth``: `SPREAD_POSITIVE_DEPTH` and
  `SPREAD_NEGATIVE_DEPTH` by default).
- Neighbours sit at ``STRIDE`` = 48 model voxels (72 mm) from a patch, so adjacent
  patches overlap by ``OVERLAP`` = 16 voxels. Neighbour V of patch U is visited only if
  U's binary mask has foreground in the overlap slab shared with V, i.e. the structure
  demonstrably continues into V, and no patch of the target already covers V.
- Overlapping predictions are blended with separable tent weights that fall towards each
  patch's border, so the blended probability is continuous across patch borders (no seams).
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping

import numpy as np

from CTSAM3DLib.aliases import IJK
from CTSAM3DLib.geometry.model_space import PATCH_SIZE
from CTSAM3DLib.prompts.simulate import interior_depth

# Distance in model voxels between the starts of neighbouring patches.
STRIDE = 48
# Width in voxels of the slab two neighbouring patches share.
OVERLAP = PATCH_SIZE - STRIDE
# A click this many voxels inside a patch's border refines that patch.
CORE_MARGIN = 12
# A new patch keeps its click at least this many voxels from its border when it moves inside the
# scan (`new_patch_start`): training centres U on its click to within `TrainConfig.center_jitter`
# (16) voxels, so the click stays where training puts it.
NEW_PATCH_MARGIN = 16
# The 26 neighbour directions (dx, dy, dz), faces first, then edges, then corners.
NEIGHBOUR_OFFSETS: tuple[IJK, ...] = tuple(sorted(
    (d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)), key=lambda d: sum(map(abs, d))))
# `slab_click`'s reach depth for large organs (voxels): the CLI's example and Slicer's "Large organs" setting.
LARGE_ORGAN_REACH_DEPTH = 10.0
# Defaults of `SessionConfig.spread_positive_depth` / `spread_negative_depth` (voxels: 12 / 6 mm),
# chosen on `val` (docs/experiments/stage-20.md).
SPREAD_POSITIVE_DEPTH = 8.0
SPREAD_NEGATIVE_DEPTH = 4.0
# Default patch budget of one click: the clicked patch and its 26 neighbours.
DEFAULT_MAX_PATCHES = 1 + len(NEIGHBOUR_OFFSETS)


def holding(starts: list[IJK], point_model: np.ndarray, margin: int = 0) -> list[IJK]:
    """The patches among ``starts`` holding ``point_model`` (x, y, z) at least ``margin`` voxels inside."""
    return [s for s in starts if np.all(point_model - np.asarray(s) >= margin)
            and np.all(point_model - np.asarray(s) <= PATCH_SIZE - 1 - margin)]


def patch_for_click(point_model: np.ndarray, starts: list[IJK], margin: int = CORE_MARGIN) -> IJK | None:
    """The existing patch holding ``point_model`` (x, y, z) at least ``margin`` voxels inside, nearest centre first."""
    best, best_d = None, np.inf
    for s in holding(starts, point_model, margin):
        d = float(np.abs(point_model - np.asarray(s) - (PATCH_SIZE - 1) / 2).max())
        if d < best_d:
            best, best_d = s, d
    return best


def prob_at(prob_zyx: np.ndarray, start: IJK, point_model: np.ndarray) -> float:
    """The patch probability at ``point_model`` (x, y, z), which the patch at ``start`` must hold."""
    x, y, z = (int(v) for v in np.clip(np.round(point_model).astype(int) - np.asarray(start), 0, PATCH_SIZE - 1))
    return float(prob_zyx[z, y, x])


def disagreeing(probs: Mapping[IJK, np.ndarray], point_model: np.ndarray, is_positive: bool) -> list[IJK]:
    """The patches holding a click whose prediction there contradicts it (background at a positive click,
    foreground at a negative one): a correction must reach them too, or the blend outvotes it."""
    return [s for s in holding(list(probs), point_model)
            if (prob_at(probs[s], s, point_model) >= 0.5) != is_positive]


def new_patch_start(point_model: np.ndarray, grid_shape_xyz: tuple[int, int, int]) -> IJK:
    """Start of a new patch for a click at ``point_model`` (x, y, z) in a model grid of ``grid_shape_xyz`` voxels.

    Centred on the click, then moved towards the inside of the scan where the centred patch would
    reach past its edge, as far as keeps the click ``NEW_PATCH_MARGIN`` voxels inside (on an axis
    shorter than a patch: as near the scan's centre as that allows). A click on a scan's first or
    last slice otherwise gets a patch half of padding, and the network sees half its context:
    the bundled CT's spleen clicked on its top slice gives Dice 0.03 centred, 0.89 moved.
    """
    pt = np.round(point_model).astype(int)
    shape = np.asarray(grid_shape_xyz)
    inside = np.where(shape >= PATCH_SIZE, np.clip(pt - PATCH_SIZE // 2, 0, shape - PATCH_SIZE),
                      (shape - PATCH_SIZE) // 2)
    start = np.clip(inside, pt - (PATCH_SIZE - 1 - NEW_PATCH_MARGIN), pt - NEW_PATCH_MARGIN)
    return tuple(int(v) for v in start)  # type: ignore[return-value]


def reach_depth_for(large_organs: bool) -> float:
    """The CPP reach depth of the front ends' *Large organs* switch: `LARGE_ORGAN_REACH_DEPTH` on, off (inf) off."""
    return LARGE_ORGAN_REACH_DEPTH if large_organs else math.inf


def is_covered(start: IJK, starts: list[IJK]) -> bool:
    """Whether an existing patch starts within half a stride of ``start`` on every axis."""
    if not starts:
        return False
    return bool(np.any(np.all(np.abs(np.asarray(starts) - np.asarray(start)) <= STRIDE // 2, axis=1)))


def reaches(mask_zyx: np.ndarray, offset_xyz: IJK) -> bool:
    """Whether a binary patch mask has foreground in the slab shared with neighbour ``offset_xyz``."""
    sl = []
    for d in reversed(offset_xyz):  # (z, y, x) order for the array
        sl.append(slice(PATCH_SIZE - OVERLAP, PATCH_SIZE) if d > 0 else slice(0, OVERLAP) if d < 0 else slice(None))
    return bool(mask_zyx[tuple(sl)].any())


def slab_click(depth_zyx: np.ndarray, start_u: IJK, start_v: IJK,
               reach_depth: float = math.inf) -> tuple[float, tuple[float, float, float]]:
    """Network-free CPP: the deepest point of U's mask inside the region U shares with V.

    A structure thick in that region (U's mask at least ``reach_depth`` voxels deep there) is
    clicked as far into V as it goes instead: the point maximising depth + reach into V (voxels
    from the border V shares with U). V's click then lies inside V, as V's clicks do in training
    (uniform in V's structure), rather than on V's border, where the network sees half its
    context: one click at the deepest point of the sample's liver gives Dice 0.82 at depth 10
    against 0.69 at the border. Thin structures (vessels, a leak's tip) keep the deepest point,
    so a leak is not carried deeper into V.

    Args:
        depth_zyx: `interior_depth` of U's binary mask ``(64, 64, 64)`` (z, y, x): computed once per
            U and shared by all its neighbours. The patch border is not background (the structure
            may go on beyond it), so the click lands in the middle of the structure where it
            crosses into V, never on its rim.
        start_u: U's start in the model grid (x, y, z).
        start_v: V's start (x, y, z); the patches must overlap.
        reach_depth: depth (voxels) from which a structure is clicked far into V (inf: never).

    Returns:
        ``(depth in voxels, click (x, y, z) in V's voxels)``; depth 0 when U's mask misses the overlap.
    """
    lo = [max(u, v) - u for u, v in zip(start_u, start_v)]
    hi = [min(u, v) + PATCH_SIZE - u for u, v in zip(start_u, start_v)]
    if any(h <= l for l, h in zip(lo, hi)):
        return 0.0, (0.0, 0.0, 0.0)
    region = depth_zyx[lo[2]:hi[2], lo[1]:hi[1], lo[0]:hi[0]]
    score = region
    if region.size and float(region.max()) >= reach_depth:
        score = region + np.where(region > 0, _reach_into_v(region.shape, start_u, start_v), 0.0)
    z, y, x = np.unravel_index(int(np.argmax(score)), region.shape)
    point_u = (x + lo[0], y + lo[1], z + lo[2])
    point_v = tuple(float(p + u - v) for p, u, v in zip(point_u, start_u, start_v))
    return float(region[z, y, x]), point_v  # type: ignore[return-value]


def overlaps(start_a: IJK, start_b: IJK) -> bool:
    """Whether the patches starting at ``start_a`` and ``start_b`` share at least one voxel."""
    return all(abs(a - b) < PATCH_SIZE for a, b in zip(start_a, start_b))


def spread_clicks(changed_u: np.ndarray, start_u: IJK, probs: Mapping[IJK, np.ndarray], skip: set[IJK],
                  min_depth: float, is_positive: bool) -> list[tuple[IJK, tuple[float, float, float]]]:
    """Clicks carrying a correction of U into the patches it continues into.

    Args:
        changed_u: U's voxels ``(64, 64, 64)`` (z, y, x) that a click turned to foreground (positive)
            or to background (negative).
        start_u: U's start (x, y, z).
        probs: the target's patches (start -> probabilities); those overlapping U are candidates.
        skip: patches that already got this correction.
        min_depth: the changed region must reach at least this deep (voxels) into the shared slab.
        is_positive: the sign of the correction.

    Returns:
        ``(V's start, click (x, y, z) in V's voxels)`` for each patch V whose slab with U holds the
        changed region that deep and whose own prediction at that point is still the old one
        (background for a positive correction, foreground for a negative one).
    """
    others = [v for v in probs if v not in skip and v != start_u and overlaps(start_u, v)]
    if not others or not changed_u.any():  # e.g. a target's first click: no distance transform to pay for
        return []
    depth = interior_depth(changed_u)
    out = []
    for v in others:
        prob_v = probs[v]
        d, point_v = slab_click(depth, start_u, v)
        if d >= min_depth and (prob_at(prob_v, v, np.asarray(point_v) + np.asarray(v)) >= 0.5) != is_positive:
            out.append((v, point_v))
    return out


def _reach_into_v(shape_zyx: tuple[int, ...], start_u: IJK, start_v: IJK) -> np.ndarray:
    """Per voxel of the region U and V share: voxels from the border V shares with U, summed over axes."""
    reach = np.zeros(shape_zyx)
    for axis, (u, v) in enumerate(zip(start_u, start_v)):  # x, y, z
        if u == v:
            continue
        n = shape_zyx[2 - axis]
        ramp = np.arange(n, dtype=np.float64) if v > u else np.arange(n - 1, -1, -1, dtype=np.float64)
        reach = reach + ramp.reshape([n if a == 2 - axis else 1 for a in range(3)])
    return reach


def slab_agreement(mask_u: np.ndarray, start_u: IJK, mask_v: np.ndarray, start_v: IJK) -> float:
    """Dice of two patch masks ``(64, 64, 64)`` (z, y, x) over the region the patches share (1 if both empty)."""
    lo = [max(u, v) for u, v in zip(start_u, start_v)]
    hi = [min(u, v) + PATCH_SIZE for u, v in zip(start_u, start_v)]
    if any(h <= l for l, h in zip(lo, hi)):
        return 0.0

    def crop(mask: np.ndarray, start: IJK) -> np.ndarray:
        return mask[lo[2] - start[2]:hi[2] - start[2], lo[1] - start[1]:hi[1] - start[1], lo[0] - start[0]:hi[0] - start[0]]

    a, b = crop(mask_u, start_u), crop(mask_v, start_v)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def neighbour_start(start: IJK, offset_xyz: IJK) -> IJK:
    """Start of the neighbour of ``start`` in direction ``offset_xyz``."""
    return tuple(s + STRIDE * d for s, d in zip(start, offset_xyz))  # type: ignore[return-value]


@functools.lru_cache(maxsize=1)
def blend_weights() -> np.ndarray:
    """Tent weights ``(64, 64, 64)`` float32: 1 at the centre, ~1/64 at the border voxels."""
    i = np.arange(PATCH_SIZE, dtype=np.float32)
    w1 = np.minimum(i + 0.5, PATCH_SIZE - 0.5 - i) / (PATCH_SIZE / 2)
    w = w1[:, None, None] * w1[None, :, None] * w1[None, None, :]
    w.setflags(write=False)
    return w


def union_box(starts: list[IJK]) -> tuple[IJK, IJK]:
    """Model-space box ``(low, shape)`` (x, y, z) covering the patches at ``starts``."""
    lo = np.min(np.asarray(starts), axis=0)
    hi = np.max(np.asarray(starts), axis=0) + PATCH_SIZE
    return tuple(int(v) for v in lo), tuple(int(v) for v in hi - lo)  # type: ignore[return-value]


def blend(probs: Mapping[IJK, np.ndarray], low: IJK, shape: IJK) -> np.ndarray:
    """Weighted blend of patch probabilities over the box ``low`` + ``shape`` (x, y, z).

    Args:
        probs: patch start -> probabilities ``(64, 64, 64)`` (z, y, x).
        low: model index of the box's first voxel.
        shape: box size (x, y, z).

    Returns:
        float32 ``(z, y, x)`` of the box; 0 where no patch reaches.
    """
    num = np.zeros(shape[::-1], dtype=np.float32)
    den = np.zeros_like(num)
    w = blend_weights()
    for start, p in probs.items():
        a = [max(s, l) for s, l in zip(start, low)]
        b = [min(s + PATCH_SIZE, l + n) for s, l, n in zip(start, low, shape)]
        if any(x >= y for x, y in zip(a, b)):
            continue
        dst = tuple(slice(x - l, y - l) for x, y, l in reversed(list(zip(a, b, low))))
        src = tuple(slice(x - s, y - s) for x, y, s in reversed(list(zip(a, b, start))))
        num[dst] += w[src] * p[src]
        den[dst] += w[src]
    np.divide(num, den, out=num, where=den > 0)
    return num
