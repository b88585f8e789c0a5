"""``PatchRunner``: batched network calls on model-space patches of one image.

It resamples patches lazily from the input image, caches their scaled pixels and encoder
features (``PatchCache``), and runs the decoder and the CPP net in batches, with one
host-device transfer per batch rather than per patch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import SimpleITK as sitk
import torch

from CTSAM3DLib.aliases import IJK
from CTSAM3DLib.engine.patch_cache import PatchCache, PatchEntry
from CTSAM3DLib.geometry.model_space import PATCH_SIZE, ModelGrid, extract_patches
from CTSAM3DLib.model.predictor import Predictor


class PatchRunner:
    """Encode / decode / CPP on patches identified by their model-space start (x, y, z)."""

    def __init__(self, predictor: Predictor, image: sitk.Image, grid: ModelGrid, cache_bytes: int,
                 batch_size: int) -> None:
        self.predictor = predictor
        self.image = image
        self.grid = grid
        self.cache = PatchCache(cache_bytes)
        self.batch_size = max(1, int(batch_size))
        self.encoder_runs = 0

    def images(self, starts: list[IJK]) -> list[PatchEntry]:
        """Cached entries for ``starts`` with at least their pixels, resampling the missing ones."""
        missing = [s for s in dict.fromkeys(starts) if s not in self.cache]
        for sl in batches(len(missing), self.batch_size):
            chunk = missing[sl]
            images = self.predictor.scale(extract_patches(self.image, self.grid, np.asarray(chunk))[:, None])
            for b, s in enumerate(chunk):
                self.cache.put(s, PatchEntry(images[b:b + 1]))
        return self._cached(starts)

    def entries(self, starts: list[IJK]) -> list[PatchEntry]:
        """Cached entries for ``starts`` with encoder features, encoding the missing ones in batches."""
        unique = list(dict.fromkeys(starts))
        unencoded = [s for s, e in zip(unique, self.images(unique)) if not e.feats]
        for sl in batches(len(unencoded), self.batch_size):
            chunk = unencoded[sl]
            images = torch.cat([e.image for e in self.images(chunk)])
            feats = self.predictor.encode(images)
            self.encoder_runs += len(chunk)
            for b, s in enumerate(chunk):
                self.cache.put(s, PatchEntry(images[b:b + 1], tuple(f[b:b + 1] for f in feats)))
        return self._cached(starts)

    def _cached(self, starts: list[IJK]) -> list[PatchEntry]:
        out = [self.cache.get(s) for s in starts]
        assert all(e is not None for e in out), "patch cache budget smaller than one batch"
        return out  # type: ignore[return-value]

    def segment(self, starts: list[IJK], points: list[np.ndarray], labels: list[np.ndarray],
                prevs: list[np.ndarray | None], refine_passes: int = 0,
                on_batch: Callable[[int], None] | None = None) -> list[np.ndarray]:
        """Probabilities ``(64, 64, 64)`` float16 per patch, from local clicks and previous masks.

        Args:
            starts: patch starts (x, y, z).
            points: per patch, float ``(N_i, 3)`` local voxel (x, y, z).
            labels: per patch, int ``(N_i,)`` (1 positive, 0 negative).
            prevs: per patch, previous probabilities ``(64, 64, 64)`` or None.
            refine_passes: decode this many more times, each with the last probabilities as the
                previous mask (`SessionConfig.refine_passes`).
            on_batch: called with the number of patches of each batch once it is done (progress;
                it may raise to stop the call).
        """
        out: list[np.ndarray] = []
        for sl in batches(len(starts), self.batch_size):
            entries = self.entries(starts[sl])
            feats = [torch.cat([e.feats[k] for e in entries]) for k in range(len(entries[0].feats))]
            pts, lab = _pad_clicks(points[sl], labels[sl])
            prev = None
            if any(p is not None for p in prevs[sl]):
                zeros = np.zeros((PATCH_SIZE,) * 3, dtype=np.float32)
                stack = np.stack([zeros if p is None else p.astype(np.float32) for p in prevs[sl]])[:, None]
                prev = torch.from_numpy(stack).to(self.predictor.device)
            image = torch.cat([e.image for e in entries]) if self.predictor.needs_image else None
            prob = self.predictor.decode(feats, pts, lab, prev, image=image, refine_passes=refine_passes)
            out.extend(prob[:, 0].to(torch.float16).cpu().numpy())
            if on_batch is not None:
                on_batch(len(entries))
        return out

    def cpp_peaks(self, jobs: list[tuple[IJK, np.ndarray, IJK]]) -> list[tuple[float, tuple[float, float, float]]]:
        """For each ``(start_u, binary mask_u (z,y,x), start_v)``: CPP heatmap peak value and location (x, y, z) in V."""
        out: list[tuple[float, tuple[float, float, float]]] = []
        for sl in batches(len(jobs), self.batch_size):
            chunk = jobs[sl]
            eu = self.images([u for u, _, _ in chunk])
            ev = self.images([v for _, _, v in chunk])
            mask = torch.from_numpy(np.stack([m for _, m, _ in chunk]).astype(np.float32))[:, None]
            heat = self.predictor.cpp(torch.cat([e.image for e in eu]), mask.to(self.predictor.device),
                                      torch.cat([e.image for e in ev]))
            flat = heat.flatten(1)
            val, idx = flat.max(dim=1)
            for v, ix in zip(val.cpu().tolist(), idx.cpu().tolist()):
                z, rem = divmod(ix, PATCH_SIZE * PATCH_SIZE)
                y, x = divmod(rem, PATCH_SIZE)
                out.append((float(v), (float(x), float(y), float(z))))
        return out


def batches(n: int, batch_size: int) -> list[slice]:
    """``n`` items in the fewest batches of at most ``batch_size``, as even in size as possible.

    A ring of 25 patches runs as 7 + 6 + 6 + 6, not 8 + 8 + 8 + 1: a batch of one costs half as much
    again per patch (oneDNN's small-batch overhead), and per patch 4-12 cost the same as 8.
    """
    k = -(-n // max(1, batch_size))
    bounds = [i * n // k for i in range(k + 1)] if k else [0]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def _pad_clicks(points: list[np.ndarray], labels: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged click lists into ``[B, N, 3]`` / ``[B, N]`` with label -1 padding."""
    n = max(len(p) for p in points)
    pts = np.zeros((len(points), n, 3), dtype=np.float32)
    lab = np.full((len(points), n), -1, dtype=np.int64)
    for b, (p, lb) in enumerate(zip(points, labels)):
        pts[b, :len(p)] = p
        lab[b, :len(lb)] = lb
    return torch.from_numpy(pts), torch.from_numpy(lab)
