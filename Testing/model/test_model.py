"""Model variants: shapes, determinism, forward/backward, and the release key layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from CTSAM3DLib import build_model
from CTSAM3DLib.model.build import VARIANTS

RELEASE_KEYS = "official-state-dict-restv2_tiny.txt"

FEATURE_SHAPES = {
    "compact": [(16, 16), (32, 8), (64, 4), (128, 2)],
    "restv2_tiny": [(128, 16), (128, 8), (128, 4), (256, 2)],
}


@pytest.mark.parametrize("variant", sorted(FEATURE_SHAPES))
def test_output_shapes(variant: str) -> None:
    torch.manual_seed(0)
    m = build_model(variant).eval()
    x = torch.rand(1, 1, 64, 64, 64)
    with torch.inference_mode():
        feats = m.encode(x)
        assert [(f.shape[1], f.shape[2]) for f in feats] == FEATURE_SHAPES[variant]
        prompt = torch.zeros(1, 3, 64, 64, 64)
        assert m.decode_logits(feats, prompt).shape == (1, 1, 64, 64, 64)
        assert m.predict_cpp(x, torch.ones_like(x), x).shape == (1, 1, 64, 64, 64)


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["restv2_small", "restv2_base", "restv2_large"])
def test_large_variants_shapes(variant: str) -> None:
    m = build_model(variant).eval()
    with torch.inference_mode():
        feats = m.encode(torch.rand(1, 1, 64, 64, 64))
    assert [f.shape[1] for f in feats] == [128, 128, 128, 256]


def test_every_variant_builds() -> None:
    for name in VARIANTS:
        assert sum(p.numel() for p in build_model(name).parameters()) > 0
    with pytest.raises(ValueError, match="Unknown model variant"):
        build_model("restv3")


def test_release_key_layout_matches_published_list(shared_docs: Path) -> None:
    published = {}
    for line in (shared_docs / RELEASE_KEYS).read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split(" ", 1)
            published[key] = tuple(int(v) for v in shape.strip("()").split(",") if v.strip())
    ours = {k: tuple(v.shape) for k, v in build_model("restv2_tiny").state_dict().items()}
    assert set(published) - set(ours) == {"prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"}
    assert set(ours) <= set(published)
    assert all(ours[k] == published[k] for k in ours)


def test_compact_forward_backward_and_determinism() -> None:
    torch.manual_seed(0)
    m = build_model("compact").train()
    x = torch.rand(2, 1, 64, 64, 64)
    prompt = torch.rand(2, 3, 64, 64, 64)
    m(x, prompt).mean().backward()
    assert all(p.grad is not None for p in m.image_encoder.parameters() if p.requires_grad)
    m.eval()
    with torch.inference_mode():
        a, b = m(x, prompt), m(x, prompt)
    assert torch.equal(a, b)


def test_compact_geo_grown_from_compact_predicts_the_same_until_trained() -> None:
    from CTSAM3DLib import Predictor
    from CTSAM3DLib.model.build import grown

    torch.manual_seed(0)
    compact = build_model("compact")
    geo = grown(compact, "compact_geo")
    assert compact.prompt_channels == 3 and geo.prompt_channels == 5
    image = torch.rand(2, 1, 64, 64, 64)
    pts, lab = torch.tensor([[[30.0, 30.0, 30.0]], [[10.0, 50.0, 20.0]]]), torch.ones(2, 1, dtype=torch.long)
    a = Predictor(compact, "compact", (-1000.0, 1000.0)).predict_patch(image, pts, lab)
    pg = Predictor(geo, "compact_geo", (-1000.0, 1000.0))
    assert pg.needs_image
    assert torch.equal(a, pg.predict_patch(image, pts, lab))
    with pytest.raises(ValueError, match="geodesic"):
        pg.decode(pg.encode(image), pts, lab)
    # the geodesic inputs are live: other weights there give another prediction
    with torch.no_grad():
        geo.mask_decoder.spade5.norm_0.mlp_geodesic.weight[:] = 0.1
    assert not torch.equal(a, pg.predict_patch(image, pts, lab))
    with pytest.raises(ValueError, match="not this network plus new layers"):
        grown(compact, "restv2_tiny")


def test_compact_geo_checkpoint_round_trip_and_detection(tmp_path: Path) -> None:
    from CTSAM3DLib.model.checkpoint import detect_variant, load_network, save_checkpoint

    torch.manual_seed(1)
    geo = build_model("compact_geo")
    save_checkpoint(tmp_path / "geo.pt", geo, "compact_geo", (-1000.0, 1000.0))
    loaded, variant, _, _ = load_network(tmp_path / "geo.pt")
    assert variant == "compact_geo"
    assert all(torch.equal(a, b) for a, b in zip(geo.state_dict().values(), loaded.state_dict().values()))
    assert detect_variant(geo.state_dict()) == "compact_geo"
    assert detect_variant(build_model("compact").state_dict()) == "compact"


def test_geodesic_skip_adds_weighted_maps_to_the_logits_and_is_detected(tmp_path: Path) -> None:
    """``compact_geo_skip`` grown from ``compact_geo`` keeps every weight and adds
    ``GEODESIC_SKIP_GAIN * (w_p * Gp + w_n * Gn)`` to the logits, starting at `GEODESIC_SKIP_START`;
    its checkpoint names the variant."""
    from CTSAM3DLib.model.build import grown
    from CTSAM3DLib.model.checkpoint import detect_variant, load_network, save_checkpoint
    from CTSAM3DLib.model.decoder import GEODESIC_SKIP_GAIN, GEODESIC_SKIP_START, DecoderConfig, PSAPDecoder

    torch.manual_seed(2)
    geo = build_model("compact_geo").eval()
    skip = grown(geo, "compact_geo_skip").eval()
    image = torch.rand(1, 1, 64, 64, 64)
    prompt = torch.zeros(1, 5, 64, 64, 64)
    prompt[:, 1, 30:34, 30:34, 30:34] = 1.0
    prompt[:, 3], prompt[:, 4] = torch.rand(64, 64, 64), torch.rand(64, 64, 64)
    (wp, wn) = GEODESIC_SKIP_START
    with torch.no_grad():
        base = geo(image, prompt)
        assert torch.allclose(skip(image, prompt) - base, wp * prompt[:, 3:4] + wn * prompt[:, 4:5], atol=1e-4)
        skip.mask_decoder.geodesic_skip[:] = torch.tensor([3.0, -1.0]) / GEODESIC_SKIP_GAIN
        added = skip(image, prompt) - base
    assert torch.allclose(added, 3.0 * prompt[:, 3:4] - prompt[:, 4:5], atol=1e-4)
    assert detect_variant(skip.state_dict()) == "compact_geo_skip"
    assert detect_variant(geo.state_dict()) == "compact_geo"
    save_checkpoint(tmp_path / "skip.pt", skip, "compact_geo_skip", (-1000.0, 1000.0))
    loaded, variant, _, _ = load_network(tmp_path / "skip.pt")
    assert variant == "compact_geo_skip"
    assert torch.equal(loaded.mask_decoder.geodesic_skip, skip.mask_decoder.geodesic_skip)
    with pytest.raises(ValueError, match="geodesic_skip needs"):
        PSAPDecoder(DecoderConfig.compact(geodesic_skip=True))


@pytest.mark.parametrize(("cin", "cout", "batch"), [(16, 8, 1), (32, 16, 2), (256, 128, 1)])
def test_up_block_matches_its_transposed_convolution(cin: int, cout: int, batch: int) -> None:
    """The channels-last upsampling (matrix product + voxel shuffle) equals ConvTranspose3d + LayerNorm + GELU."""
    from CTSAM3DLib.model.decoder import UpBlock

    torch.manual_seed(cin)
    block = UpBlock(cin, cout)
    for p in block.parameters():
        p.data.normal_(0.0, 0.2)
    x = torch.randn(batch, cin, 4, 5, 3, requires_grad=True)
    reference = block.cna(x)
    fast = block(x)
    assert fast.shape == reference.shape == (batch, cout, 8, 10, 6)
    assert torch.allclose(fast, reference, atol=1e-5)
    fast.square().sum().backward()  # trainable: the gradients match too
    grad_fast = [x.grad.clone()] + [p.grad.clone() for p in block.parameters()]
    x.grad = None
    block.zero_grad()
    reference.square().sum().backward()
    grad_ref = [x.grad] + [p.grad for p in block.parameters()]
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(grad_fast, grad_ref))


@pytest.mark.parametrize(("batch", "prompt_channels", "layout"),
                         [(1, 5, torch.channels_last_3d), (2, 3, torch.contiguous_format), (2, 5, torch.channels_last_3d)])
def test_channels_last_block_matches_the_reference(batch: int, prompt_channels: int, layout: torch.memory_format) -> None:
    """A kernel-1 PSAP block on CPU (channels-last, norm folded into the modulation) equals SPADE + conv, gradients too."""
    import torch.nn.functional as F

    from CTSAM3DLib.model.decoder import PSAPBlock

    torch.manual_seed(batch + prompt_channels)
    block = PSAPBlock(16, 8, 1, prompt_channels)
    for p in block.parameters():
        p.data.normal_(0.0, 0.3)  # non-trivial biases and a norm input far from zero mean
    x = (torch.randn(batch, 16, 6, 8, 10) * 2 + 3).contiguous(memory_format=layout).requires_grad_()
    prompt = torch.rand(batch, prompt_channels, 12, 16, 20)  # resized to x's grid inside
    fast = block(x, prompt)

    def reference() -> torch.Tensor:
        dx = block.conv_0(F.leaky_relu(block.norm_0(x, prompt), 0.2))
        return x + block.conv_1(F.leaky_relu(block.norm_1(dx, prompt), 0.2))

    ref = reference()
    assert fast.shape == ref.shape == (batch, 16, 6, 8, 10)
    assert fast.is_contiguous(memory_format=layout)  # channels-last in, channels-last out: no copy
    assert torch.allclose(fast, ref, atol=1e-4, rtol=1e-4)
    params = [x, *block.parameters()]
    grad_fast = torch.autograd.grad(fast.square().sum(), params)
    grad_ref = torch.autograd.grad(ref.square().sum(), params)
    # to float rounding of each gradient's scale (conv_0's bias gets none: the norm after it removes it)
    assert all((a - b).abs().max() <= 1e-5 * b.abs().max() + 1e-2 for a, b in zip(grad_fast, grad_ref))


@pytest.mark.parametrize(("batch", "chunk"), [(1, 8192), (2, 7)])
def test_projected_up_block_matches_the_block_and_a_1x1_head(batch: int, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused upsampling + 1x1 head equals ConvTranspose3d + LayerNorm + GELU + Conv3d k1, gradients too."""
    from CTSAM3DLib.model import decoder
    from CTSAM3DLib.model.decoder import UpBlock

    monkeypatch.setattr(decoder, "_PROJECT_CHUNK", chunk)  # 7: chunks that split rows and batch items
    torch.manual_seed(batch)
    block, head = UpBlock(16, 8), torch.nn.Conv3d(8, 1, 1)
    for p in [*block.parameters(), *head.parameters()]:
        p.data.normal_(0.0, 0.3)
    x = torch.randn(batch, 16, 4, 5, 3, requires_grad=True)
    reference = head(block.cna(x))
    fast = block.forward_projected(x, head.weight.flatten(), head.bias[0])
    assert fast.shape == reference.shape == (batch, 1, 8, 10, 6)
    assert torch.allclose(fast, reference, atol=1e-5)
    params = [x, *block.parameters(), *head.parameters()]
    grad_fast = torch.autograd.grad(fast.square().sum(), params)
    grad_ref = torch.autograd.grad(reference.square().sum(), params)
    assert all(torch.allclose(a, b, atol=1e-4, rtol=1e-4) for a, b in zip(grad_fast, grad_ref))


def test_a_refine_pass_decodes_again_with_its_own_answer_as_the_previous_mask() -> None:
    """``Predictor.decode(refine_passes=1)`` = decode, then decode the same clicks with that answer as Y
    (the in-place Y of the pass must not leak into the caller's tensors)."""
    from CTSAM3DLib.model.predictor import Predictor

    torch.manual_seed(3)
    predictor = Predictor(build_model("compact_geo_skip"), "compact_geo_skip", (-1000.0, 1000.0))
    image = torch.rand(2, 1, 64, 64, 64)
    points, labels = torch.tensor([[[30.0, 31.0, 29.0]], [[20.0, 40.0, 33.0]]]), torch.ones(2, 1, dtype=torch.long)
    prev = torch.rand(2, 1, 64, 64, 64)
    kept = prev.clone()
    feats = predictor.encode(image)
    once = predictor.decode(feats, points, labels, prev, image=image)
    again = predictor.decode(feats, points, labels, once, image=image)
    refined = predictor.decode(feats, points, labels, prev, image=image, refine_passes=1)
    assert torch.allclose(refined, again, atol=1e-6)
    assert torch.equal(prev, kept)
