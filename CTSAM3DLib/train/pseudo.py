"""Class-agnostic pseudo-structures: more anatomy than a few labelled patients hold.

A click model learns "segment the region this click is in", which needs no class name, so any
coherent region of a CT is a training target (SegVol used Felzenszwalb-Huttenlocher masks the
same way). Two generators run on a model-space CT (1.5 mm, HU, ``(z, y, x)``):

- HU bands: air inside the body (lungs, airways, bowel gas), fat, soft tissue and bone,
  opened to cut thin bridges and split into 6-connected components. These give large regions,
  bigger than a patch included (lungs, subcutaneous fat, muscle groups). Air is then split where
  it narrows (`split_at_necks`): the airway tree joins both lungs into one component, and a model
  trained on that component learns that a click in the trachea fills the lungs.
- Supervoxels (off unless ``supervoxel_mm`` names sizes): SLIC (scikit-image) on the windowed CT
  at 4.5 mm, e.g. 25, 50 and 100 mm across. Off by default since stage 10: at 4.5 mm their
  borders are blocks, not image edges, and most are chunks of a larger organ or straddle fat and
  muscle, so a click inside an organ was taught "a blob of about this size" by one sample and
  "the whole organ" by the next. On stage 9's training data that prior showed as round-1
  predictions of 14,000-45,000 voxels for 10 cm supervoxels filling 36,000-136,000 voxels of the
  patch (Dice 0.17-0.43), the same under-fill as on the lungs; a 720-step A/B favours leaving them
  out on `val` and `test` (docs/experiments/stage-10-11.md).

Every candidate is kept only if it is inside the body, between ``min_voxels`` and
``max_voxels`` large, compact (it fills at least ``min_fill`` of its bounding box) and
homogeneous (HU standard deviation at most ``max_std_hu`` inside its core: the region eroded
by one voxel, so that the partial-volume rim of an air region, 300-500 HU off its inside, does
not reject it; measured on the training CTs, the whole-region test rejected every lung base). The result is deterministic for a
seed, and a generator that finds nothing to keep is simply absent (the list may be empty).

Air regions count as inside the patient when their core's mean HU is lung-like (above ``-900``) even
where the body mask misses them: a chest CT cropped inside the body has lungs that touch the
image border, which the per-slice hole filling of `body_mask` cannot close. Air outside the
patient averages -950 to -1000 HU. Airway trees are thin and branched, so the air pieces only
need to fill ``_AIR_MIN_FILL`` of their box.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.segmentation import slic, watershed

# (name, low HU, high HU, opening iterations) of the HU bands.
HU_BANDS: tuple[tuple[str, float, float, int], ...] = (
    ("air", -1100.0, -400.0, 1),
    ("fat", -200.0, -30.0, 1),
    ("soft", 0.0, 150.0, 2),
    ("bone", 200.0, 3000.0, 0),
)
# Model-space voxel size (mm) and the SLIC working resolution factor (3: 4.5 mm voxels).
_SPACING_MM = 1.5
_SLIC_STEP = 3
# Air: lung-like mean HU (inside the patient even where the body mask is not), least box fill.
_LUNG_MEAN_HU = -900.0
_AIR_MIN_FILL = 0.03


@dataclass(frozen=True)
class PseudoStructure:
    """One pseudo-structure: a name, its bounding box's first voxel and its tight bool mask (z, y, x)."""

    name: str
    lo_zyx: tuple[int, int, int]
    mask: np.ndarray


def body_mask(hu_zyx: np.ndarray) -> np.ndarray:
    """The patient: the largest connected region above -500 HU, holes (lungs, bowel) filled per slice."""
    fg = ndimage.binary_opening(hu_zyx > -500, iterations=2)
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.zeros(hu_zyx.shape, dtype=bool)
    sizes = ndimage.sum_labels(fg, labels, index=np.arange(1, n + 1))
    body = labels == (int(np.argmax(sizes)) + 1)
    for k in range(body.shape[0]):
        body[k] = ndimage.binary_fill_holes(body[k])
    return body


def generate(hu_zyx: np.ndarray, seed: int, *, supervoxel_mm: Sequence[float] = (), min_voxels: int = 400,
             max_voxels: int = 1_500_000, min_fill: float = 0.1, max_std_hu: float = 120.0,
             per_group: int = 40) -> list[PseudoStructure]:
    """Pseudo-structures of one model-space CT (see the module docstring).

    Args:
        hu_zyx: HU ``(z, y, x)`` on the 1.5 mm model grid.
        seed: fixes which candidates are kept when a group has more than ``per_group``.
        supervoxel_mm: approximate diameters (mm) of SLIC supervoxel scales to add; none by default.
        min_voxels: smallest region kept (400 voxels ~ 1.4 ml).
        max_voxels: largest region kept (1.5 million voxels ~ 5 l: a lung, many patches).
        min_fill: least fraction of its bounding box a region must fill.
        max_std_hu: largest HU standard deviation inside a region's core.
        per_group: most regions kept per HU band or SLIC scale.

    Returns:
        The kept regions, named ``"pseudo_<band or slicNN>_<n>"``, in a fixed order.
    """
    hu = np.asarray(hu_zyx, dtype=np.float32)
    body = body_mask(hu)
    rng = np.random.default_rng(seed)
    out: list[PseudoStructure] = []

    def keep(group: str, labels: np.ndarray, count: int, fill: float = min_fill, inside_checked: bool = False) -> None:
        found = ndimage.find_objects(labels, max_label=count)
        kept: list[PseudoStructure] = []
        for index, box in enumerate(found, start=1):
            if box is None:
                continue
            region = labels[box] == index
            voxels = int(region.sum())
            if not min_voxels <= voxels <= max_voxels or voxels < fill * region.size:
                continue
            if (not inside_checked and body[box][region].mean() < 0.9) or _core_std(hu[box], region) > max_std_hu:
                continue
            kept.append(PseudoStructure("", tuple(int(s.start) for s in box), region))  # type: ignore[arg-type]
        if len(kept) > per_group:
            kept = [kept[i] for i in sorted(rng.choice(len(kept), per_group, replace=False))]
        out.extend(PseudoStructure(f"pseudo_{group}_{n}", p.lo_zyx, p.mask) for n, p in enumerate(kept))

    for name, low, high, opening in HU_BANDS:
        if name == "air":
            labels, count = _air_pieces(hu, body, low, high, opening, min_voxels)
            keep(name, labels, count, fill=min(min_fill, _AIR_MIN_FILL), inside_checked=True)
            continue
        band = (hu >= low) & (hu <= high) & body
        if opening:
            band = ndimage.binary_opening(band, iterations=opening)
        labels, count = ndimage.label(band)
        keep(name, labels, count)

    if not supervoxel_mm:
        return out
    small = hu[::_SLIC_STEP, ::_SLIC_STEP, ::_SLIC_STEP]
    small_body = body[::_SLIC_STEP, ::_SLIC_STEP, ::_SLIC_STEP]
    windowed = np.clip((small + 1000.0) / 2000.0, 0.0, 1.0)
    for size_mm in supervoxel_mm:
        region_voxels = (size_mm / (_SPACING_MM * _SLIC_STEP)) ** 3
        n_segments = max(2, int(small_body.sum() / region_voxels))
        labels_small = slic(windowed, n_segments=n_segments, compactness=0.05, max_num_iter=5, channel_axis=None,
                            start_label=1, mask=small_body)
        labels = _upsample_labels(labels_small, hu.shape)
        keep(f"slic{int(size_mm)}", labels, int(labels_small.max()))
    return out


def _air_pieces(hu: np.ndarray, body: np.ndarray, low: float, high: float, opening: int,
                min_voxels: int) -> tuple[np.ndarray, int]:
    """Labels of the air inside the patient, each component split at its necks; ``(labels, count)``."""
    air = (hu >= low) & (hu <= high)
    if opening:
        air = ndimage.binary_opening(air, iterations=opening)
    components, n = ndimage.label(air)
    out = np.zeros(hu.shape, dtype=np.int32)
    count = 0
    for index, box in enumerate(ndimage.find_objects(components, max_label=n), start=1):
        if box is None:
            continue
        region = components[box] == index
        if region.sum() < min_voxels:
            continue
        if body[box][region].mean() < 0.9 and hu[box][_core(region)].mean() <= _LUNG_MEAN_HU:
            continue  # air around the patient
        pieces = split_at_necks(region)
        ids = np.unique(pieces[pieces > 0])
        relabelled = np.zeros(int(ids.max()) + 1, dtype=np.int32)
        relabelled[ids] = np.arange(count + 1, count + 1 + len(ids))
        out[box][region] = relabelled[pieces[region]]
        count += len(ids)
    return out, count


def split_at_necks(region: np.ndarray, ratio: float = 0.5, min_distance: int = 4) -> np.ndarray:
    """Split a bool region where it narrows: a watershed of its distance map, basins merged across wide joins.

    Every local maximum of the distance to the region's edge seeds a basin. Two touching basins
    merge when the widest point of their shared border (its distance value, the "saddle") is at
    least ``ratio`` times the smaller of their two peaks, so a lung's many maxima become one
    piece while the trachea (radius ~7 voxels) and a lung stay apart across a bronchus (radius
    ~3). Measured on a thorax CT at 1.5 mm: ratio 0.5 and 0.6 give left lung, right lung and
    the airway tree; 0.7 cuts the lungs. Returns int labels (0 outside), not consecutive.
    """
    edt = ndimage.distance_transform_edt(region)
    peaks = peak_local_max(edt, min_distance=min_distance, labels=region.astype(np.int32), exclude_border=False)
    if len(peaks) < 2:
        return region.astype(np.int32)
    markers = np.zeros(region.shape, dtype=np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    basins = watershed(-edt, markers, mask=region)
    n = len(peaks)
    height = np.zeros(n + 1)
    height[1:] = edt[tuple(peaks.T)]
    # The saddle of each pair of touching basins: the largest distance value on their border.
    keys, saddles = [], []
    for axis in range(3):
        a, d = np.moveaxis(basins, axis, 0), np.moveaxis(edt, axis, 0)
        left, right = a[:-1], a[1:]
        border = (left > 0) & (right > 0) & (left != right)
        lo, hi = np.minimum(left[border], right[border]), np.maximum(left[border], right[border])
        keys.append(lo.astype(np.int64) * (n + 1) + hi)
        saddles.append(np.minimum(d[:-1][border], d[1:][border]))
    key, saddle = np.concatenate(keys), np.concatenate(saddles)
    order = np.lexsort((-saddle, key))
    key, saddle = key[order], saddle[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    parent = np.arange(n + 1)

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = int(parent[i])
        return i

    for k in np.argsort(-saddle[first], kind="stable"):
        pair, s = int(key[first][k]), float(saddle[first][k])
        a, b = root(pair // (n + 1)), root(pair % (n + 1))
        if a != b and s >= ratio * min(height[a], height[b]):
            parent[b] = a
            height[a] = max(height[a], height[b])
    roots = np.array([root(i) for i in range(n + 1)], dtype=np.int32)
    return roots[basins]


def _core(region: np.ndarray) -> np.ndarray:
    """The region without its one-voxel (partial-volume) rim; the whole region if it is thinner."""
    core = ndimage.binary_erosion(region)
    return core if core.any() else region


def _core_std(hu: np.ndarray, region: np.ndarray) -> float:
    """HU standard deviation of the region's core (`_core`)."""
    return float(hu[_core(region)].std())


def _upsample_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling by `_SLIC_STEP`, cropped to ``shape``."""
    up = labels
    for axis in range(3):
        up = np.repeat(up, _SLIC_STEP, axis=axis)
    return np.ascontiguousarray(up[: shape[0], : shape[1], : shape[2]])
