"""The exact sparse-prompt shortcut of the PSAP decoder gives the dense result."""

from __future__ import annotations

import pytest
import torch

from CTSAM3DLib.model.build import build_model
from CTSAM3DLib.model.decoder import SPADE
from CTSAM3DLib.prompts.heatmap import prompt_tensor


@pytest.fixture(autouse=True)
def _always_sparse(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SPADE, "SPARSE_MIN_MACS", 0)  # exercise the shortcut on small test modules


def _spade(kernel: int) -> SPADE:
    torch.manual_seed(kernel)
    spade = SPADE(12, 8, kernel)
    for p in spade.parameters():
        p.data.normal_(0.0, 0.3)  # non-trivial biases: the constant field matters
    return spade


def _prompt(points: list[tuple[float, float, float]], prev: torch.Tensor | None = None) -> torch.Tensor:
    pts = torch.tensor([points], dtype=torch.float32)
    return prompt_tensor(pts, torch.ones(1, len(points), dtype=torch.long), prev)


def _dense_and_sparse(spade: SPADE, x: torch.Tensor, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.enable_grad():  # the shortcut is inference-only: this is the plain dense path
        dense = spade(x, prompt).detach()
    with torch.inference_mode():
        sparse = spade(x, prompt)
    return dense, sparse


@pytest.mark.parametrize("kernel", [3])  # kernel 1 takes `_pointwise_modulation` (below)
@pytest.mark.parametrize("size", [8, 16, 32])
@pytest.mark.parametrize("points", [[(30.0, 31.0, 33.0)], [(0.0, 0.0, 0.0)], [(63.0, 1.0, 62.0)],
                                    [(10.0, 50.0, 20.0), (12.0, 48.0, 25.0)]])
def test_sparse_prompt_matches_dense(kernel: int, size: int, points: list[tuple[float, float, float]]) -> None:
    spade = _spade(kernel)
    x = torch.randn(1, 12, size, size, size)
    prompt = _prompt(points)
    calls: list[tuple[int, ...]] = []
    spade.mlp_shared.register_forward_hook(lambda m, inp, out: calls.append(tuple(inp[0].shape[2:])))
    dense, sparse = _dense_and_sparse(spade, x, prompt)
    assert torch.allclose(dense, sparse, atol=1e-5, rtol=0)
    if size >= 16:  # the shortcut really ran on a crop (at 8^3 the box covers most of the grid)
        assert calls[-1] != (size,) * 3


def test_empty_and_partial_prompts_match_dense() -> None:
    spade = _spade(3)
    x = torch.randn(2, 12, 32, 32, 32)
    empty = torch.zeros(2, 3, 64, 64, 64)
    prev = torch.zeros(2, 1, 64, 64, 64)
    prev[:, :, :, :, :10] = torch.rand(2, 1, 64, 64, 10)  # a CPP neighbour: prior mask in a side slab
    partial = prompt_tensor(torch.tensor([[[5.0, 30.0, 30.0]], [[3.0, 40.0, 20.0]]]),
                            torch.ones(2, 1, dtype=torch.long), prev)
    for prompt in (empty, partial):
        dense, sparse = _dense_and_sparse(spade, x, prompt)
        assert torch.allclose(dense, sparse, atol=1e-5, rtol=0)


def test_decoder_first_click_unchanged() -> None:
    torch.manual_seed(0)
    model = build_model("compact").eval()
    feats = [f.detach() for f in model.encode(torch.rand(1, 1, 64, 64, 64))]
    prompt = _prompt([(30.0, 31.0, 33.0)])
    with torch.enable_grad():
        dense = model.decode_logits(feats, prompt).detach()
    with torch.inference_mode():
        sparse = model.decode_logits(feats, prompt)
    assert torch.allclose(dense, sparse, atol=1e-4, rtol=0)


@pytest.mark.parametrize("prompt_channels", [3, 5])
@pytest.mark.parametrize("kernel", [1, 3])
def test_merged_modulation_matches_the_convolutions(prompt_channels: int, kernel: int) -> None:
    """1 + gamma and beta from the merged weights (matrix products for kernel 1, two convolutions
    otherwise) equal the SPADE's own four convolutions applied one by one."""
    torch.manual_seed(0)
    spade = SPADE(12, 8, kernel, prompt_channels)
    for p in spade.parameters():
        p.data.normal_(0.0, 0.3)
    prompt = torch.rand(2, prompt_channels, 16, 16, 16)
    pre = spade.mlp_shared[0](prompt[:, :3])
    if spade.mlp_geodesic is not None:
        pre = pre + 10.0 * spade.mlp_geodesic(prompt[:, 3:])
    act = torch.relu(pre)
    merged = spade._pointwise_modulation if kernel == 1 else spade._dense_modulation
    scale, shift = merged(prompt)
    assert torch.allclose(scale, 1 + spade.mlp_gamma(act), atol=1e-4, rtol=1e-5)
    assert torch.allclose(shift, spade.mlp_beta(act), atol=1e-4, rtol=1e-5)
