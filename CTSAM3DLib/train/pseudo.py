"""Class-agnostic pseudo-structures: more anatomy than a few labelled patients hold.

A click model learns "segment the region this click is in", which needs no class name, so any
coherent region of a CT is a training target (SegVol used Felzenszwalb-Huttenlocher masks the
same way). Two generators run on a model-space CT (1.5 mm, HU, ``(z, y, x)``):

- HU bands: air inside the body (lungs, airways, bowel gas), fat, soft tissue and bone,
  opened to cut thin bridges and split into 6-connected components. These give large regions,
  bigger than a patch included (lungs, subcutaneous fat, muscle groups).
- Supervoxels: SLIC (scikit-image) on the windowed CT at 4.5 mm, at sizes from about 2.5 cm
  to 10 cm across, so every scale from a node to an organ part is covered.

Every candidate is kept only if it is inside the body, between ``min_voxels`` and
``max_voxels`` large, compact (it fills at least ``min_fill`` of its bounding box) and
homogeneous (HU standard deviation at most ``max_std_hu`` inside its core: the region eroded
by one voxel, so that the partial-volume rim of an air region, 300-500 HU off its inside, does
not reject it; measured on the training CTs, the whole-region test rejected every lung base). The result is deterministic for a
seed, and a generator that finds nothing to keep is simply absent (the list may be empty).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.segmentation import slic

# (name, low HU, high HU, opening iterations) of the HU bands.
HU_BANDS: tuple[tuple[str, float, float, int], ...] = (
    ("air", -1100.0, -400.0, 1),
    ("fat", -200.0, -30.0, 1),
    ("soft", 0.0, 150.0, 2),
    ("bone", 200.0, 3000.0, 0),
)
# Approximate supervoxel diameters (mm) of the SLIC scales.
SLIC_SIZES_MM: tuple[float, ...] = (25.0, 50.0, 100.0)
# Model-space voxel size (mm) and the SLIC working resolution factor (3: 4.5 mm voxels).
_SPACING_MM = 1.5
_SLIC_STEP = 3


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


def generate(hu_zyx: np.ndarray, seed: int, *, min_voxels: int = 400, max_voxels: int = 1_500_000,
             min_fill: float = 0.1, max_std_hu: float = 120.0, per_group: int = 40) -> list[PseudoStructure]:
    """Pseudo-structures of one model-space CT (see the module docstring).

    Args:
        hu_zyx: HU ``(z, y, x)`` on the 1.5 mm model grid.
        seed: fixes which candidates are kept when a group has more than ``per_group``.
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

    def keep(group: str, labels: np.ndarray, count: int) -> None:
        found = ndimage.find_objects(labels, max_label=count)
        kept: list[PseudoStructure] = []
        for index, box in enumerate(found, start=1):
            if box is None:
                continue
            region = labels[box] == index
            voxels = int(region.sum())
            if not min_voxels <= voxels <= max_voxels or voxels < min_fill * region.size:
                continue
            if body[box][region].mean() < 0.9 or _core_std(hu[box], region) > max_std_hu:
                continue
            kept.append(PseudoStructure("", tuple(int(s.start) for s in box), region))  # type: ignore[arg-type]
        if len(kept) > per_group:
            kept = [kept[i] for i in sorted(rng.choice(len(kept), per_group, replace=False))]
        out.extend(PseudoStructure(f"pseudo_{group}_{n}", p.lo_zyx, p.mask) for n, p in enumerate(kept))

    for name, low, high, opening in HU_BANDS:
        band = (hu >= low) & (hu <= high) & body
        if opening:
            band = ndimage.binary_opening(band, iterations=opening)
        labels, count = ndimage.label(band)
        keep(name, labels, count)

    small = hu[::_SLIC_STEP, ::_SLIC_STEP, ::_SLIC_STEP]
    small_body = body[::_SLIC_STEP, ::_SLIC_STEP, ::_SLIC_STEP]
    windowed = np.clip((small + 1000.0) / 2000.0, 0.0, 1.0)
    for size_mm in SLIC_SIZES_MM:
        region_voxels = (size_mm / (_SPACING_MM * _SLIC_STEP)) ** 3
        n_segments = max(2, int(small_body.sum() / region_voxels))
        labels_small = slic(windowed, n_segments=n_segments, compactness=0.05, max_num_iter=5, channel_axis=None,
                            start_label=1, mask=small_body)
        labels = _upsample_labels(labels_small, hu.shape)
        keep(f"slic{int(size_mm)}", labels, int(labels_small.max()))
    return out


def _core_std(hu: np.ndarray, region: np.ndarray) -> float:
    """HU standard deviation of the region without its one-voxel rim (the whole region if thinner)."""
    core = ndimage.binary_erosion(region)
    return float(hu[core if core.any() else region].std())


def _upsample_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour upsampling by `_SLIC_STEP`, cropped to ``shape``."""
    up = labels
    for axis in range(3):
        up = np.repeat(up, _SLIC_STEP, axis=axis)
    return np.ascontiguousarray(up[: shape[0], : shape[1], : shape[2]])
