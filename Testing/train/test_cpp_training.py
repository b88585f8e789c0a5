"""The CPP loss trains a CPP head that fires where a structure continues and stays low where it does not."""

from __future__ import annotations

import numpy as np
import torch

from CTSAM3DLib.engine.session import SessionConfig
from CTSAM3DLib.model.build import build_model
from CTSAM3DLib.train.losses import cpp_loss, deepest_point_heatmaps

# Patch side (half the real 64 keeps the test fast; the CPP net and losses take any size).
_SIZE = 32


def _pair(rng: np.random.Generator, continues: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A bright tube along x in U; V is U's +x neighbour (overlapping by a quarter). Returns ``(image_u, mask_u, image_v, mask_v)`` (z, y, x)."""
    noise = lambda: (0.3 + 0.03 * rng.standard_normal((_SIZE,) * 3)).astype(np.float32)  # noqa: E731
    img_u, img_v = noise(), noise()
    cy, cz = rng.integers(9, 23, size=2)
    zz, yy = np.meshgrid(np.arange(_SIZE), np.arange(_SIZE), indexing="ij")
    disc = (yy - cy) ** 2 + (zz - cz) ** 2 <= 12
    mask_u = np.zeros((_SIZE,) * 3, bool)
    mask_v = np.zeros_like(mask_u)
    start = int(rng.integers(4, 12))
    end_u = _SIZE if continues else int(rng.integers(15, 20))
    mask_u[:, :, start:end_u] = disc[:, :, None]
    if continues:
        mask_v[:, :, : int(rng.integers(14, 28))] = disc[:, :, None]
    img_u[mask_u] = 0.8
    img_v[mask_v] = 0.8
    return img_u, mask_u, img_v, mask_v


def _batch(rng: np.random.Generator, flags: list[bool]) -> tuple[torch.Tensor, ...]:
    parts = [_pair(rng, c) for c in flags]
    stack = lambda i, dt: torch.from_numpy(np.stack([p[i] for p in parts]).astype(dt))[:, None]  # noqa: E731
    return stack(0, np.float32), stack(1, np.float32), stack(2, np.float32), np.stack([p[3] for p in parts])


def test_balanced_cpp_loss_learns_to_fire_only_where_the_structure_continues() -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    model = build_model("compact")
    opt = torch.optim.Adam(model.cpp_predictor.parameters(), lr=2e-3)
    for _ in range(120):
        img_u, mask_u, img_v, gt_v = _batch(rng, [True, False, True, False])
        heat = model.predict_cpp(img_u, mask_u, img_v)
        loss = cpp_loss(heat, deepest_point_heatmaps(gt_v), balanced=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
    threshold = SessionConfig().cpp_min_peak
    with torch.no_grad():
        img_u, mask_u, img_v, gt_v = _batch(np.random.default_rng(99), [True] * 4 + [False] * 4)
        heat = model.predict_cpp(img_u, mask_u, img_v).flatten(1)
    peaks = heat.max(1).values
    assert torch.all(peaks[:4] > threshold), peaks
    assert torch.all(peaks[4:] < threshold), peaks
    hits = torch.from_numpy(gt_v.reshape(8, -1)).gather(1, heat.argmax(1, keepdim=True))
    assert hits[:4].all(), "the peak lies inside the continuing structure"
