"""Geodesic click maps: image-aware distances, the maps the compact_geo decoder reads."""

from __future__ import annotations

import torch

from CTSAM3DLib.prompts.geodesic import ALPHA, BETA, geodesic_distance, geodesic_maps
from CTSAM3DLib.prompts.heatmap import prompt_tensor


def _two_regions(size: int = 32, noise: float = 0.01) -> torch.Tensor:
    """``[1, D, H, W]``: intensity 0.1 for x < size/2, 0.6 beyond (an edge at x = size/2), light noise."""
    g = torch.Generator().manual_seed(0)
    img = torch.full((1, size, size, size), 0.1)
    img[..., size // 2:] = 0.6
    return img + noise * torch.randn(img.shape, generator=g)


def test_distance_is_low_inside_the_clicked_region_and_high_across_an_edge() -> None:
    img = _two_regions()
    seeds = torch.zeros_like(img, dtype=torch.bool)
    seeds[0, 16, 16, 4] = True  # z, y, x: in the left region
    d = geodesic_distance(img, seeds)
    inside, across = d[0, :, :, :15], d[0, :, :, 17:]
    assert d[0, 16, 16, 4] == 0
    assert inside.max() < across.min()
    # the far corner of the clicked region is nearer than the voxel just across the edge
    assert d[0, 0, 0, 15] < d[0, 16, 16, 17]
    # crossing the edge costs about beta * contrast, far more than a voxel step
    assert d[0, 16, 16, 17] - d[0, 16, 16, 14] > 0.8 * BETA * 0.5


def test_distance_follows_a_winding_region() -> None:
    """A U-shaped corridor: its far arm is reached around the bend, not through the wall."""
    img = torch.full((1, 8, 32, 32), 0.8)
    img[:, :, 2:30, 2:8] = 0.1    # left arm (x 2..7)
    img[:, :, 24:30, 2:30] = 0.1  # bottom (y 24..29)
    img[:, :, 2:30, 24:30] = 0.1  # right arm (x 24..29)
    seeds = torch.zeros_like(img, dtype=torch.bool)
    seeds[0, 4, 3, 4] = True      # top of the left arm
    d = geodesic_distance(img, seeds)
    right_top, wall = d[0, 4, 3, 27], d[0, 4, 3, 15]
    assert right_top < wall
    assert right_top < ALPHA * 80 + 0.5  # about the corridor length (~75 flat steps), no edge crossed
    assert wall > BETA * 0.7  # the short way crosses an edge of contrast 0.7


def test_maps_put_clicks_in_their_channels_and_ignore_padding() -> None:
    img = _two_regions(64)[:, None].repeat(2, 1, 1, 1, 1)
    points = torch.tensor([[[8.0, 30.0, 30.0], [50.0, 30.0, 30.0]], [[8.0, 30.0, 30.0], [0.0, 0.0, 0.0]]])
    labels = torch.tensor([[1, 0], [1, -1]])
    m = geodesic_maps(img, points, labels)
    assert m.shape == (2, 2, 64, 64, 64)
    assert float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    # item 0: positive map high on the left (clicked) side, low across the edge; negative map the reverse
    assert m[0, 0, 30, 30, 10] > 0.5 > m[0, 0, 30, 30, 50]
    assert m[0, 1, 30, 30, 50] > 0.5 > m[0, 1, 30, 30, 10]
    # item 1 has no negative click (label -1 is padding): an all-zero map, and item 0 does not leak into it
    assert float(m[1, 1].abs().max()) == 0.0
    assert torch.allclose(m[1, 0], m[0, 0])


def test_prompt_tensor_appends_the_geodesic_maps_only_when_given_the_image() -> None:
    img = _two_regions(64)[:, None]
    pts, lab = torch.tensor([[[8.0, 30.0, 30.0]]]), torch.tensor([[1]])
    plain = prompt_tensor(pts, lab, None)
    geo = prompt_tensor(pts, lab, None, image=img)
    assert plain.shape[1] == 3 and geo.shape[1] == 5
    assert torch.equal(geo[:, :3], plain)
    assert torch.equal(geo[:, 3:], geodesic_maps(img, pts, lab))
