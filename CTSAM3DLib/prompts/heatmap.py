"""Click maps: clicks -> Gaussian heatmaps, exactly as the official release builds them.

Each click becomes a 3-D Gaussian (radius 8 voxels, i.e. a 17^3 kernel, sigma 2 voxels,
peak 1, values below ``float64 eps * peak`` set to 0) clipped at the patch border.
Positive clicks go to map P, negative clicks to map N, label -1 is padding. Where kernels
overlap the later click overwrites the earlier one. Each map is then min-max normalised
over the whole batch tensor (skipped when the map is all zero). The decoder input is
``[Y, P, N]`` with Y the previous mask (the release order; the paper writes [P, N, Y]).

Tensors are ``[B, C, D, H, W]`` = ``[B, C, z, y, x]``; points are voxel ``(x, y, z)``.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from CTSAM3DLib.prompts.geodesic import geodesic_maps

# Gaussian radius in voxels (kernel side 2 * radius + 1).
RADIUS_VOX = 8
# Gaussian standard deviation in voxels.
SIGMA_VOX = 2.0


@functools.lru_cache(maxsize=4)
def gaussian_kernel(radius_vox: int = RADIUS_VOX, sigma_vox: float = SIGMA_VOX) -> np.ndarray:
    """Return the (2r+1)^3 Gaussian kernel with peak 1, float32, tiny tails zeroed."""
    r = np.arange(-radius_vox, radius_vox + 1, dtype=np.float64)
    zz, yy, xx = np.meshgrid(r, r, r, indexing="ij")
    h = np.exp(-(xx**2 + yy**2 + zz**2) / (2.0 * sigma_vox**2))
    h[h < np.finfo(np.float64).eps * h.max()] = 0.0
    h /= h.max()
    h.setflags(write=False)
    return h.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _kernel_on(device: torch.device) -> torch.Tensor:
    """`gaussian_kernel` as a tensor on ``device`` (cached: one upload per device)."""
    return torch.from_numpy(gaussian_kernel()).to(device)


def _paste(target: torch.Tensor, kernel: torch.Tensor, center_zyx: tuple[int, int, int]) -> None:
    """Overwrite ``target`` (z,y,x) with ``kernel`` centred at ``center_zyx``, clipped."""
    r = kernel.shape[0] // 2
    dst, src = [], []
    for c, n in zip(center_zyx, target.shape):
        lo, hi = c - r, c + r + 1
        dst.append(slice(max(lo, 0), min(hi, n)))
        src.append(slice(max(lo, 0) - lo, 2 * r + 1 - (hi - min(hi, n))))
    if all(d.stop > d.start for d in dst):
        target[tuple(dst)] = kernel[tuple(src)]


def click_maps(points: torch.Tensor, labels: torch.Tensor, size: int | tuple[int, int, int] = 64) -> torch.Tensor:
    """Render clicks into positive/negative Gaussian maps.

    Built on the points' device (a training batch of 32 patches on a GPU: no 67 MB host map to
    fill, normalise and upload per click round).

    Args:
        points: float ``[B, N, 3]`` voxel ``(x, y, z)`` inside the patch (rounded to voxels).
        labels: int ``[B, N]``; 1 positive, 0 negative, -1 ignored.
        size: patch side, or ``(D, H, W)``.

    Returns:
        float32 ``[B, 2, D, H, W]``: channel 0 = P, channel 1 = N, on ``points.device``.
    """
    dhw = (size, size, size) if isinstance(size, int) else tuple(size)
    if points.ndim != 3 or points.shape[-1] != 3 or labels.shape != points.shape[:2]:
        raise ValueError(f"points must be [B,N,3] and labels [B,N]; got {tuple(points.shape)} and {tuple(labels.shape)}")
    kernel = _kernel_on(points.device)
    pts = torch.round(points.detach().float()).to(torch.int64).cpu().tolist()
    lab = labels.detach().cpu().tolist()
    maps = torch.zeros((len(pts), 2) + dhw, dtype=torch.float32, device=points.device)
    for b, (pts_b, lab_b) in enumerate(zip(pts, lab)):
        for (x, y, z), lbl in zip(pts_b, lab_b):
            if lbl in (0, 1):
                _paste(maps[b, 0 if lbl == 1 else 1], kernel, (z, y, x))
    # each map min-max normalised over the batch, where it is not all zero (the release's rule)
    lo = maps.amin(dim=(0, 2, 3, 4), keepdim=True)
    hi = maps.amax(dim=(0, 2, 3, 4), keepdim=True)
    scaled = (hi > 0) & (hi > lo)
    return torch.where(scaled, (maps - lo) / torch.where(scaled, hi - lo, torch.ones_like(hi)), maps)


def prompt_tensor(
    points: torch.Tensor, labels: torch.Tensor, prev_mask: torch.Tensor | None, size: int = 64,
    image: torch.Tensor | None = None,
) -> torch.Tensor:
    """Build the decoder prompt ``[B, 3, D, H, W]`` in the release order ``[Y, P, N]``.

    Args:
        points: float ``[B, N, 3]`` voxel ``(x, y, z)``.
        labels: int ``[B, N]`` (1 / 0 / -1).
        prev_mask: previous probabilities ``[B, 1, D, H, W]`` in [0, 1], or None (zeros).
        size: patch side.
        image: the patches ``[B, 1, D, H, W]`` in [0, 1] for a model with geodesic prompts
            (``compact_geo``): the geodesic maps ``[Gp, Gn]`` are appended (``[B, 5, ...]``).
    """
    pn = click_maps(points, labels, size)
    if prev_mask is None:
        prev = torch.zeros_like(pn[:, :1])
    else:
        prev = prev_mask.to(device=pn.device, dtype=pn.dtype)
    parts = [prev, pn]
    if image is not None:
        parts.append(geodesic_maps(image.to(pn.device), points, labels))
    return torch.cat(parts, dim=1)
