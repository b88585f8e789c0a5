"""Model space: the 1.5 mm isotropic, identity-direction grid the network sees.

The grid spans the world (LPS) bounding box of the input image's voxel
centres. It is never materialised: `extract_patch` resamples one 64^3 patch
at a time straight from the input image (linear, pad -1024 HU) and
`resample_to_input` maps a model-space probability region back onto the
input voxel grid.

Both run on every click. For an input whose axes run along the model's (a direction that is a
signed permutation: every CT stored axial, sagittal or coronal) trilinear interpolation is
separable, so they apply one small interpolation matrix per axis (three matrix products, 2-3x
faster than SimpleITK's resampler); oblique inputs go through SimpleITK.
Both paths follow ITK's rules: a sample within half a voxel outside the image takes the edge
value, one farther out the default.

Patches are identified by their integer start index ``(x, y, z)`` in the model
grid; arrays are ``(z, y, x)``; world coordinates are LPS mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
from numpy.typing import ArrayLike

from CTSAM3DLib.io.readers import sitk_geometry_matrix
from CTSAM3DLib.io.volume import Volume

# Voxel size of model space in mm (all three axes).
MODEL_SPACING_MM = 1.5
# Edge length of one network patch in model voxels.
PATCH_SIZE = 64
# Value (HU) of model-space voxels that fall outside the input image.
PAD_HU = -1024.0
# Slack (in voxels) when flooring/ceiling indices that are integers up to rounding.
_INDEX_EPS = 1e-4


@dataclass(frozen=True)
class ModelGrid:
    """The model-space grid: identity direction, isotropic spacing.

    Attributes:
        origin_lps: world position (LPS mm) of model voxel (0, 0, 0)'s centre, (x, y, z).
        shape_xyz: number of model voxels along x, y, z.
        spacing_mm: voxel size in mm, `MODEL_SPACING_MM` unless given.
    """

    origin_lps: tuple[float, float, float]
    shape_xyz: tuple[int, int, int]
    spacing_mm: float = MODEL_SPACING_MM

    def __post_init__(self) -> None:
        origin = tuple(float(v) for v in self.origin_lps)
        shape = tuple(int(v) for v in self.shape_xyz)
        if len(origin) != 3 or not np.all(np.isfinite(origin)):
            raise ValueError(f"ModelGrid.origin_lps must be 3 finite values, got {self.origin_lps}.")
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"ModelGrid.shape_xyz must be 3 positive ints, got {self.shape_xyz}.")
        if not self.spacing_mm > 0:
            raise ValueError(f"ModelGrid.spacing_mm must be positive, got {self.spacing_mm}.")
        object.__setattr__(self, "origin_lps", origin)
        object.__setattr__(self, "shape_xyz", shape)
        object.__setattr__(self, "spacing_mm", float(self.spacing_mm))

    @classmethod
    def for_image(cls, image: sitk.Image | Volume, spacing_mm: float = MODEL_SPACING_MM) -> ModelGrid:
        """The grid spanning the world bounding box of an image's voxel centres.

        Args:
            image: the input image (any direction and spacing).
            spacing_mm: model voxel size, default `MODEL_SPACING_MM`.

        Returns:
            Grid with origin = minimum LPS corner of the 8 corner-voxel centres and
            shape = ``floor((max - min) / spacing + 1e-6) + 1`` per axis.
        """
        matrix, size_xyz = _image_geometry(image)
        corners_ijk = np.array(np.meshgrid(*[[0, n - 1] for n in size_xyz], indexing="ij")).reshape(3, -1).T
        corners_lps = corners_ijk @ matrix[:3, :3].T + matrix[:3, 3]
        low, high = corners_lps.min(axis=0), corners_lps.max(axis=0)
        shape = np.floor((high - low) / spacing_mm + 1e-6).astype(int) + 1
        return cls(origin_lps=tuple(low), shape_xyz=tuple(shape), spacing_mm=spacing_mm)

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 float64 matrix mapping model indices (x, y, z, 1) to LPS mm."""
        matrix = np.diag([self.spacing_mm] * 3 + [1.0])
        matrix[:3, 3] = self.origin_lps
        return matrix

    def lps_to_model(self, points_lps: ArrayLike) -> np.ndarray:
        """LPS mm to continuous model indices: ``(lps - origin) / spacing``.

        Args:
            points_lps: ``(N, 3)`` or ``(3,)`` LPS points.

        Returns:
            Same shape, float64 model indices (x, y, z).
        """
        return (_points(points_lps) - np.array(self.origin_lps)) / self.spacing_mm

    def model_to_lps(self, points_model: ArrayLike) -> np.ndarray:
        """Continuous model indices (x, y, z) to LPS mm (inverse of `lps_to_model`)."""
        return _points(points_model) * self.spacing_mm + np.array(self.origin_lps)


def _points(points: ArrayLike) -> np.ndarray:
    array = np.asarray(points, dtype=np.float64)
    if array.ndim not in (1, 2) or array.shape[-1] != 3:
        raise ValueError(f"Points must have shape (N, 3) or (3,) in (x, y, z) order, got {array.shape}.")
    return array


def _image_geometry(image: sitk.Image | Volume) -> tuple[np.ndarray, tuple[int, int, int]]:
    if isinstance(image, Volume):
        return image.ijk_to_lps, image.shape_xyz
    if not isinstance(image, sitk.Image) or image.GetDimension() != 3:
        raise ValueError("Expected a 3-D SimpleITK image or a Volume.")
    size = image.GetSize()
    return sitk_geometry_matrix(image), (int(size[0]), int(size[1]), int(size[2]))


def _integer_triplet(values: ArrayLike, name: str) -> tuple[int, int, int]:
    array = np.asarray(values)
    if array.shape != (3,) or not np.all(np.mod(array, 1) == 0):
        raise ValueError(f"{name} must be 3 integers (x, y, z), got {values!r}.")
    return int(array[0]), int(array[1]), int(array[2])


def _resampler(origin: ArrayLike, spacing: ArrayLike, direction: ArrayLike, size: ArrayLike,
               default: float) -> sitk.ResampleImageFilter:
    resampler = sitk.ResampleImageFilter()
    resampler.SetOutputOrigin(np.asarray(origin, dtype=np.float64).tolist())
    resampler.SetOutputSpacing(np.asarray(spacing, dtype=np.float64).tolist())
    resampler.SetOutputDirection(np.asarray(direction, dtype=np.float64).ravel().tolist())
    resampler.SetSize(np.asarray(size, dtype=np.int64).tolist())
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(default))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return resampler


def extract_patch(image: sitk.Image, grid: ModelGrid, start_xyz: ArrayLike, size: int = PATCH_SIZE) -> np.ndarray:
    """Resample one cubic model-space patch from the input image.

    Only the patch is computed (no whole-volume resampling). The patch may start
    outside the grid (negative start or beyond ``grid.shape_xyz``): voxels outside
    the image are `PAD_HU`.

    Args:
        image: the input CT, 3-D scalar, HU, any spacing/direction. Convert a
            Volume once with `CTSAM3DLib.io.volume_to_sitk`, not per patch.
        grid: the model grid of ``image`` (`ModelGrid.for_image`).
        start_xyz: integer model index (x, y, z) of the patch's first voxel.
        size: patch edge length in model voxels.

    Returns:
        float32 array ``(size, size, size)`` = ``(z, y, x)`` in HU, linear
        interpolation, model voxel ``start + (x, y, z)`` at ``[z, y, x]``.
    """
    if isinstance(image, Volume):
        raise TypeError("extract_patch needs a SimpleITK image: convert the Volume once with volume_to_sitk.")
    start = np.array(_integer_triplet(start_xyz, "start_xyz"))
    if int(size) != size or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}.")
    axes = _axis_map(image, grid)
    if axes is not None:
        return _extract_separable(image, axes, start, int(size))
    origin = np.array(grid.origin_lps) + start * grid.spacing_mm
    resampler = _resampler(origin, [grid.spacing_mm] * 3, np.eye(3), [size] * 3, PAD_HU)
    return sitk.GetArrayFromImage(resampler.Execute(image))


def extract_patches(image: sitk.Image, grid: ModelGrid, starts_xyz: ArrayLike, size: int = PATCH_SIZE) -> np.ndarray:
    """Resample several patches (see `extract_patch`).

    Args:
        image: the input CT (SimpleITK, HU).
        grid: its model grid.
        starts_xyz: ``(n, 3)`` integer model start indices (x, y, z).
        size: patch edge length.

    Returns:
        float32 array ``(n, size, size, size)`` = ``(n, z, y, x)`` in HU.
    """
    starts = np.asarray(starts_xyz).reshape(-1, 3)
    patches = np.empty((len(starts), size, size, size), dtype=np.float32)
    for n, start in enumerate(starts):
        patches[n] = extract_patch(image, grid, start, size)
    return patches


def resample_to_input(
    prob_zyx: np.ndarray,
    grid: ModelGrid,
    region_start_xyz: ArrayLike,
    reference: sitk.Image,
    *,
    default_value: float = 0.0,
) -> tuple[tuple[int, int, int], np.ndarray]:
    """Map a model-space probability region back onto the input voxel grid.

    The region's world bounding box (its 8 corner voxel centres) is converted to
    continuous input indices, floored/ceiled and clipped to the image; the region
    is linearly resampled onto that input sub-grid (input spacing and direction).
    Interpolating probabilities linearly and then thresholding at 0.5 (as the
    engine does) gives smooth edges on the input grid, unlike nearest-neighbour
    resampling of an already binary mask, which shows the 1.5 mm staircase.

    Args:
        prob_zyx: float probabilities ``(z, y, x)`` of model voxels
            ``region_start_xyz + (x, y, z)``.
        grid: the model grid.
        region_start_xyz: integer model index (x, y, z) of ``prob_zyx[0, 0, 0]``.
        reference: the input image whose grid receives the values.
        default_value: value for box voxels farther than half a model voxel
            outside the region (possible at the box's border and, for oblique
            inputs, its corners). Pass NaN to tell them apart.

    Returns:
        ``(start_ijk, probs_zyx)``: the box's first input index (i, j, k) and its
        float32 values ``(k, j, i)`` sized to the box, so that
        ``mask[k0:k0+nk, j0:j0+nj, i0:i0+ni] = probs_zyx >= 0.5``. With no overlap:
        ``((0, 0, 0), empty (0, 0, 0) array)``.
    """
    prob = np.asarray(prob_zyx, dtype=np.float32)
    if prob.ndim != 3 or min(prob.shape) < 1:
        raise ValueError(f"prob_zyx must be a non-empty 3-D (z, y, x) array, got shape {prob.shape}.")
    start = np.array(_integer_triplet(region_start_xyz, "region_start_xyz"))
    box = _input_box(grid, start, prob.shape[::-1], reference)
    if box is None:
        return (0, 0, 0), np.zeros((0, 0, 0), dtype=np.float32)
    low, high = box
    start_ijk = (int(low[0]), int(low[1]), int(low[2]))
    axes = _axis_map(reference, grid)
    if axes is not None:
        return start_ijk, _to_input_separable(prob, axes, start, low, high, default_value)
    region = sitk.GetImageFromArray(prob)
    region.SetOrigin([float(v) for v in np.array(grid.origin_lps) + start * grid.spacing_mm])
    region.SetSpacing([grid.spacing_mm] * 3)
    out_origin = reference.TransformIndexToPhysicalPoint([int(v) for v in low])
    resampler = _resampler(out_origin, reference.GetSpacing(), reference.GetDirection(), high - low + 1, default_value)
    return start_ijk, sitk.GetArrayFromImage(resampler.Execute(region))


def _input_box(grid: ModelGrid, start: np.ndarray, size_xyz: tuple[int, ...],
               reference: sitk.Image) -> tuple[np.ndarray, np.ndarray] | None:
    corners_model = start + np.array(np.meshgrid(*[[0, n - 1] for n in size_xyz], indexing="ij")).reshape(3, -1).T
    corners_lps = grid.model_to_lps(corners_model)
    corners_ijk = np.array([reference.TransformPhysicalPointToContinuousIndex(p.tolist()) for p in corners_lps])
    low = np.floor(corners_ijk.min(axis=0) + _INDEX_EPS).astype(int)
    high = np.ceil(corners_ijk.max(axis=0) - _INDEX_EPS).astype(int)
    low = np.maximum(low, 0)
    high = np.minimum(high, np.array(reference.GetSize()) - 1)
    if np.any(high < low):
        return None
    return low, high


@dataclass(frozen=True)
class _AxisMap:
    """How an axis-aligned input's voxel axes run in model space.

    Input axis ``a`` (i, j, k) runs along model axis ``model_axis[a]`` (x, y, z):
    ``model index = offset[a] + scale[a] * input index`` (scale negative for a flipped axis).
    """

    model_axis: tuple[int, int, int]
    offset: np.ndarray
    scale: np.ndarray
    size_ijk: tuple[int, int, int]


def _axis_map(image: sitk.Image, grid: ModelGrid) -> _AxisMap | None:
    """The image's `_AxisMap`, or None when its direction is not a signed permutation (oblique)."""
    direction = np.array(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    model_axis = np.argmax(np.abs(direction), axis=0)
    if sorted(model_axis) != [0, 1, 2] or not np.allclose(np.abs(direction[model_axis, [0, 1, 2]]), 1.0, atol=1e-9):
        return None
    sign = direction[model_axis, [0, 1, 2]]
    origin = np.array(image.GetOrigin()) - np.array(grid.origin_lps)
    size = image.GetSize()
    return _AxisMap(tuple(int(r) for r in model_axis), origin[model_axis] / grid.spacing_mm,  # type: ignore[arg-type]
                    sign * np.array(image.GetSpacing()) / grid.spacing_mm, (int(size[0]), int(size[1]), int(size[2])))


def _lerp_rows(coords: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Linear-interpolation weights ``(len(coords), n)`` sampling an n-voxel axis at continuous indices.

    Samples within half a voxel outside the axis take the edge voxel (ITK's rule); ``inside`` marks
    the samples in ``[-0.5, n - 0.5)``, whose rows are the only non-zero ones.
    """
    inside = (coords >= -0.5) & (coords < n - 0.5)
    clamped = np.clip(coords, 0, n - 1)
    low = np.floor(clamped).astype(np.int64)
    frac = (clamped - low).astype(np.float32)
    weights = np.zeros((len(coords), n), dtype=np.float32)
    rows = np.arange(len(coords))
    np.add.at(weights, (rows, low), 1 - frac)
    np.add.at(weights, (rows, np.minimum(low + 1, n - 1)), frac)
    weights[~inside] = 0
    return weights, inside


def _separable(src: np.ndarray, weights: list[np.ndarray], inside: list[np.ndarray], default: float) -> np.ndarray:
    """``out[a, b, c] = sum src[p, q, r] * w0[a, p] * w1[b, q] * w2[c, r]``, ``default`` where any
    axis's sample is outside (``inside[axis]`` False): three matrix products.

    Run by torch, whose thread pool the network uses too: NumPy's BLAS threads spin after a
    product and slowed the next encoder pass by 3x on two cores.
    """
    import torch  # here, not at the top: the command line's help and I/O paths do not load torch

    n0, n1, n2 = src.shape
    w0, w1, w2 = (torch.from_numpy(w) for w in weights)
    source = torch.from_numpy(np.require(src, np.float32, ["C", "W"]))  # torch wants writable memory
    out = (source.reshape(-1, n2) @ w2.T).reshape(n0, n1, len(w2))
    out = torch.matmul(w1, out)
    values = (w0 @ out.reshape(n0, -1)).reshape(len(w0), len(w1), len(w2)).numpy()
    for axis, ok in enumerate(inside):
        values[(slice(None),) * axis + (~ok,)] = default
    return values


def _support(weights: np.ndarray) -> slice:
    """The columns a weight matrix reads (one column when it reads none)."""
    used = np.flatnonzero(weights.any(axis=0))
    return slice(int(used[0]), int(used[-1]) + 1) if used.size else slice(0, 1)


def _extract_separable(image: sitk.Image, axes: _AxisMap, start: np.ndarray, size: int) -> np.ndarray:
    """`extract_patch` for an axis-aligned input: the patch ``(z, y, x)`` in HU, float32."""
    rows, inside, crop = [], [], []
    for a in (2, 1, 0):  # input axes k, j, i: the array's order
        r = axes.model_axis[a]
        coords = (start[r] + np.arange(size) - axes.offset[a]) / axes.scale[a]
        weights, ok = _lerp_rows(coords, axes.size_ijk[a])
        cols = _support(weights)
        rows.append(weights[:, cols])
        inside.append(ok)
        crop.append(cols)
    source = sitk.GetArrayViewFromImage(image)[tuple(crop)].astype(np.float32)
    patch = _separable(source, rows, inside, PAD_HU)  # axes: model axes of input k, j, i
    order = [2 - axes.model_axis[2 - p] for p in range(3)]  # array position of model z, y, x
    return np.ascontiguousarray(patch.transpose(np.argsort(order)))


def _to_input_separable(prob: np.ndarray, axes: _AxisMap, start: np.ndarray, low: np.ndarray, high: np.ndarray,
                        default: float) -> np.ndarray:
    """`resample_to_input` for an axis-aligned input: values ``(k, j, i)`` on the box ``low..high``."""
    rows, inside = [], []
    for a in (2, 1, 0):
        r = axes.model_axis[a]
        coords = axes.offset[a] + axes.scale[a] * np.arange(low[a], high[a] + 1) - start[r]
        weights, ok = _lerp_rows(coords, prob.shape[2 - r])
        rows.append(weights)
        inside.append(ok)
    source = prob.transpose([2 - axes.model_axis[a] for a in (2, 1, 0)])  # model axes in input k, j, i order
    return _separable(source, rows, inside, default)
