"""Click maps against hand-computed Gaussian values (radius 8, sigma 2, [Y, P, N])."""

from __future__ import annotations

import math

import numpy as np
import torch

from CTSAM3DLib.prompts.heatmap import click_maps, gaussian_kernel, prompt_tensor


def test_kernel_values() -> None:
    k = gaussian_kernel()
    assert k.shape == (17, 17, 17)
    assert k[8, 8, 8] == 1.0
    assert math.isclose(k[8, 8, 9], math.exp(-1 / 8), rel_tol=1e-6)
    assert math.isclose(k[8, 10, 11], math.exp(-(4 + 9) / 8), rel_tol=1e-6)
    assert math.isclose(k[0, 0, 0], math.exp(-192 / 8), rel_tol=1e-5)


def test_maps_channels_positions_and_clipping() -> None:
    pts = torch.tensor([[[10.0, 20.0, 30.0], [0.0, 0.0, 63.0], [5.0, 5.0, 5.0]]])
    lab = torch.tensor([[1, 0, -1]])
    m = click_maps(pts, lab, 64)
    assert m.shape == (1, 2, 64, 64, 64)
    assert m[0, 0, 30, 20, 10] == 1.0 and m[0, 1, 30, 20, 10] == 0.0
    assert math.isclose(float(m[0, 0, 30, 20, 12]), math.exp(-4 / 8), rel_tol=1e-6)
    assert m[0, 1, 63, 0, 0] == 1.0  # clipped at the corner, still peak 1
    assert m[0, 0, 5, 5, 5] == 0.0 and m[0, 1, 5, 5, 5] == 0.0  # label -1 ignored
    assert float(m[0, 0].sum()) > 0 and (m[0, 0][:, :, 19:] == 0).all()


def test_later_click_overwrites_and_prompt_order() -> None:
    pts = torch.tensor([[[30.0, 30.0, 30.0], [32.0, 30.0, 30.0]]])
    m = click_maps(pts, torch.tensor([[1, 1]]), 64)
    # voxel x=31 is 1 away from both; x=30 belongs to the later kernel (distance 2).
    assert math.isclose(float(m[0, 0, 30, 30, 30]), math.exp(-4 / 8), rel_tol=1e-6)
    prev = torch.full((1, 1, 64, 64, 64), 0.25)
    p = prompt_tensor(pts, torch.tensor([[1, 0]]), prev)
    assert p.shape == (1, 3, 64, 64, 64)
    assert torch.all(p[:, 0] == 0.25)  # Y first
    assert p[0, 1, 30, 30, 30] == 1.0 and p[0, 2, 30, 30, 32] == 1.0  # then P, then N


def test_no_clicks_gives_zero_maps() -> None:
    m = click_maps(torch.zeros(2, 1, 3), torch.full((2, 1), -1), 16)
    assert m.shape == (2, 2, 16, 16, 16) and float(m.abs().sum()) == 0.0
    assert np.all(prompt_tensor(torch.zeros(1, 1, 3), torch.full((1, 1), -1), None, 16).numpy() == 0)
