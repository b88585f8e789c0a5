"""CT-appropriate augmentation and patch sampling from the cached model-space volumes.

Spatial: one small random rotation (about each axis, up to ``rotate_deg``) and isotropic
zoom (``scale_range``), applied to U and V *together* (both are cut from one transformed
frame, so their overlap stays consistent for the cross-patch prompt), about the first click
of U, which therefore stays exactly on its voxel. Images are sampled linearly, masks by
linearly and thresholded at 0.5, with `PAD_HU` / 0 outside the volume.

Intensity: ``HU * (1 + a) + b`` plus Gaussian noise, before the window is applied.

Mirror flips and axis swaps (`random_flip_swap`): the model never names a structure or a side,
the click says which structure is meant, so a mirrored or transposed patch pair is as valid a
training sample as the original. They are applied to U, V (and the negative neighbour W) and
to their clicks and offsets together, so the pair stays geometrically consistent.

Acquisition: Gaussian blur, a simulated slice thickness (the patch is averaged over a thicker
slab along z and sampled back to 1.5 mm), and gamma on the windowed intensities, all with the
same parameters for every patch of a sample.

Arrays are ``(z, y, x)``; points, offsets and the 3x3 matrices act on ``(x, y, z)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from CTSAM3DLib.geometry.model_space import PAD_HU, PATCH_SIZE


def random_affine(rng: np.random.Generator, rotate_deg: float, scale_range: tuple[float, float]) -> np.ndarray:
    """A random rotation-and-zoom matrix (3x3, acting on (x, y, z) voxel offsets).

    Output voxel offsets ``d`` map to source offsets ``A @ d``; a zoom factor > 1 shows a
    larger field of view (structures look smaller).
    """
    ax, ay, az = np.deg2rad(rng.uniform(-rotate_deg, rotate_deg, size=3))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    scale = rng.uniform(scale_range[0], scale_range[1])
    return (rz @ ry @ rx) * scale


def crop(array: np.ndarray, start_zyx: np.ndarray, shape_zyx: tuple[int, ...] | np.ndarray,
         pad: float) -> np.ndarray:
    """Copy of the box ``start + shape`` of ``array`` (z, y, x), ``pad`` where it leaves the array."""
    shape = tuple(int(s) for s in shape_zyx)
    out = np.full(shape, pad, dtype=array.dtype)
    src, dst = [], []
    for s, n, size in zip(start_zyx, shape, array.shape):
        lo, hi = max(int(s), 0), min(int(s) + n, size)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = array[tuple(src)]
    return out


def sample_pair(image: np.ndarray, mask: np.ndarray, mask_lo_zyx: np.ndarray, anchor_xyz: np.ndarray,
                anchor_in_u_xyz: np.ndarray, offset_v_xyz: np.ndarray, affine: np.ndarray | None,
                size: int = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Cut patches U and V (and their masks) from one, possibly transformed, frame.

    Output voxel ``q`` of U shows source voxel ``anchor + A (q - anchor_in_u)``; voxel ``q`` of V
    shows ``anchor + A (q + offset_v - anchor_in_u)``.

    Args:
        image: model-space CT, (z, y, x), HU (e.g. the int16 memory map of the cache).
        mask: the structure's bool mask over its bounding box, (z, y, x).
        mask_lo_zyx: the bounding box's first voxel in ``image``.
        anchor_xyz: integer source voxel (x, y, z) of U's first click.
        anchor_in_u_xyz: integer voxel (x, y, z) where that click lands in U.
        offset_v_xyz: integer offset (x, y, z) from U's first voxel to V's.
        affine: 3x3 rotation/zoom on (x, y, z), or None for plain integer crops.
        size: patch side.

    Returns:
        ``(hu_u, hu_v, gt_u, gt_v)``: float32 HU and bool masks, each (size, size, size).
    """
    starts = [anchor_xyz - anchor_in_u_xyz, anchor_xyz - anchor_in_u_xyz + offset_v_xyz]
    if affine is None:
        hus, gts = [], []
        for start in starts:
            hus.append(crop(image, start[::-1], (size,) * 3, PAD_HU).astype(np.float32))
            gts.append(crop(mask, start[::-1] - mask_lo_zyx, (size,) * 3, False))
        return hus[0], hus[1], gts[0], gts[1]
    a = np.asarray(affine, dtype=np.float64)
    corner = np.array(list(itertools.product((0, size - 1), repeat=3)), dtype=np.float64)  # (x, y, z)
    shifts = [np.zeros(3), np.asarray(offset_v_xyz, dtype=np.float64)]
    # source = t + A q for output voxel q, per patch
    ts = [anchor_xyz + a @ (shift - anchor_in_u_xyz) for shift in shifts]
    pts = np.concatenate([t + corner @ a.T for t in ts])
    lo = np.floor(pts.min(axis=0)).astype(np.int64) - 1
    hi = np.ceil(pts.max(axis=0)).astype(np.int64) + 2
    block_shape = tuple(int(v) for v in (hi - lo)[::-1])
    block = np.empty((1, 2) + block_shape, dtype=np.float32)
    block[0, 0] = crop(image, lo[::-1], block_shape, PAD_HU)
    block[0, 1] = crop(mask, lo[::-1] - mask_lo_zyx, block_shape, False)
    # theta = [m | v] maps normalised output coords (x, y, z) to normalised block coords (align_corners=True)
    d = np.diag(2.0 / (hi - lo - 1))
    m = d @ a * ((size - 1) / 2.0)
    u = torch.linspace(-1.0, 1.0, size, dtype=torch.float32)
    grids = []
    for t in ts:  # separable evaluation of theta @ (u_x, u_y, u_z, 1), much faster than F.affine_grid
        mt = torch.as_tensor(m.T, dtype=torch.float32)  # rows: contribution of u_x, u_y, u_z
        v = torch.as_tensor(m.sum(axis=1) + d @ (t - lo) - 1.0, dtype=torch.float32)
        grids.append(u[:, None, None, None] * mt[2] + u[None, :, None, None] * mt[1]
                      + (u[None, None, :, None] * mt[0] + v))
    grid = torch.stack(grids)
    out = F.grid_sample(torch.from_numpy(block).expand(2, -1, -1, -1, -1), grid, mode="bilinear",
                        padding_mode="border", align_corners=True).numpy()
    return out[0, 0], out[1, 0], out[0, 1] >= 0.5, out[1, 1] >= 0.5


def intensity_params(rng: np.random.Generator, scale: float, shift_hu: float, noise_std_hu: float
                     ) -> tuple[float, float, float]:
    """Draw ``(a, b, noise std)``: ``a ~ U(-scale, scale)``, ``b ~ U(-shift, shift)`` HU, std ``~ U(0, noise)`` HU."""
    return (float(rng.uniform(-scale, scale)), float(rng.uniform(-shift_hu, shift_hu)),
            float(rng.uniform(0.0, noise_std_hu)) if noise_std_hu > 0 else 0.0)


def apply_intensity(hu: np.ndarray, a: float, b: float, noise_std_hu: float, rng: np.random.Generator) -> np.ndarray:
    """``hu * (1 + a) + b`` plus Gaussian noise of std ``noise_std_hu``; a new float32 array."""
    out = hu.astype(np.float32) * np.float32(1.0 + a) + np.float32(b)
    if noise_std_hu > 0:
        out += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(noise_std_hu)
    return out


def random_flip_swap(rng: np.random.Generator, flip_prob: float, swap_prob: float
                     ) -> tuple[tuple[bool, bool, bool], tuple[int, int, int]]:
    """Draw mirror flips (per x, y, z axis, each with ``flip_prob``) and, with ``swap_prob``, a random
    non-identity permutation of the axes. Returns ``(flips_xyz, perm_xyz)`` for `flip_swap_array`."""
    flips = tuple(bool(rng.random() < flip_prob) for _ in range(3))
    perm = (0, 1, 2)
    if swap_prob > 0 and rng.random() < swap_prob:
        perms = [p for p in itertools.permutations(range(3)) if p != (0, 1, 2)]
        perm = perms[int(rng.integers(len(perms)))]
    return flips, perm  # type: ignore[return-value]


def flip_swap_array(array_zyx: np.ndarray, flips: Sequence[bool], perm: Sequence[int]) -> np.ndarray:
    """Mirror a ``(z, y, x)`` patch along the flagged (x, y, z) axes, then permute its axes.

    New axis ``i`` (x, y, z) is old axis ``perm[i]`` after the flips.
    """
    out = array_zyx
    for axis_xyz, flip in enumerate(flips):
        if flip:
            out = np.flip(out, axis=2 - axis_xyz)
    out = np.transpose(out, [2 - perm[2 - n] for n in range(3)])
    return np.ascontiguousarray(out)


def flip_swap_point(point_xyz: np.ndarray, flips: Sequence[bool], perm: Sequence[int],
                    size: int = PATCH_SIZE) -> np.ndarray:
    """Where voxel ``point_xyz`` of a patch lands under `flip_swap_array`."""
    q = np.array([size - 1 - v if f else v for v, f in zip(np.asarray(point_xyz, dtype=np.float64), flips)])
    return q[list(perm)]


def flip_swap_offset(offset_xyz: np.ndarray, flips: Sequence[bool], perm: Sequence[int]) -> np.ndarray:
    """The offset between two patches (e.g. V's start minus U's) after both are flipped and swapped alike."""
    s = np.array([-v if f else v for v, f in zip(np.asarray(offset_xyz), flips)])
    return s[list(perm)]


def blur(hu: np.ndarray, sigma_vox: float) -> np.ndarray:
    """Isotropic Gaussian blur of a float32 HU patch (``sigma_vox`` model voxels)."""
    return ndimage.gaussian_filter(hu, sigma_vox, mode="nearest").astype(np.float32, copy=False)


def slice_thickness(hu: np.ndarray, thickness_mm: float, spacing_mm: float = 1.5) -> np.ndarray:
    """Simulate a CT reconstructed at ``thickness_mm`` slices: average along z over a slab of that
    thickness (a box filter, what a thick reconstruction does) and sample back at the patch's spacing."""
    width = thickness_mm / spacing_mm
    if width <= 1.0:
        return hu
    return ndimage.uniform_filter1d(hu, size=max(2, int(round(width))), axis=0, mode="nearest"
                                    ).astype(np.float32, copy=False)


def gamma_hu(hu: np.ndarray, gamma: float, window_hu: tuple[float, float]) -> np.ndarray:
    """Gamma curve on the windowed intensities, expressed back in HU (outside the window: unchanged)."""
    lo, hi = window_hu
    t = np.clip((hu - lo) / (hi - lo), 0.0, 1.0)
    inside = (hu > lo) & (hu < hi)
    return np.where(inside, lo + (hi - lo) * t ** gamma, hu).astype(np.float32)
