"""PSAP mask decoder: a U-shaped decoder whose every stage is modulated by the prompt.

PSAP (progressively and spatially aligned prompt) = a SPADE residual block: the prompt
map ``[Y, P, N]`` is resized to each stage's grid and predicts per-voxel gamma and beta
for an instance norm. Clicks therefore act at every resolution, and a new click only
re-runs this decoder, never the image encoder.

The release layout (key names ``spade1..5``, ``upscale1..5``, ``mask_prediction_head``,
``iou_prediction_head``) is reproduced exactly by ``DecoderConfig.release()``; our compact
CPU variant uses the same blocks with narrower widths, light 1x1 modulation at 32^3 and
a 1x1 head at 64^3 (see ``DecoderConfig.compact()``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from CTSAM3DLib.model.layers import Conv3d, conv3d

# Number of prompt channels: previous mask Y, positive map P, negative map N (+ geodesic Gp, Gn
# in the ``compact_geo`` variant, see `CTSAM3DLib.prompts.geodesic`).
PROMPT_CHANNELS = 3
GEODESIC_PROMPT_CHANNELS = 5
# Fixed gain on the geodesic maps' convolution: with Adam a weight moves about lr per step, so
# the gain lets geodesic inputs grown from zero (on a trained `compact` network) reach the
# scale of the other prompt inputs in ~100 steps instead of ~1,000 (a learning-rate multiplier
# that needs no optimiser settings). Fresh weights are divided by it, so the initial scale is
# the usual one.
GEODESIC_GAIN = 10.0
# The geodesic logit skip (``compact_geo_skip``) starts at these weights on [Gp, Gn], not at zero:
# on the trained ``compact_geo`` network, adding 4 * Gp to the logits of a first click raised its
# patch Dice from 0.51 to 0.59 (11 structures: the `val` lungs and trachea, 8 organs of the
# training CT; 0.37 -> 0.88 on the liver), yet from zero the training loss pushed the weight
# down: the under-filled voxels far from the click sit at saturated negative logits and give no
# gradient, so only the voxels near the predicted edge, where less fill helps, steer it.
# Gn starts at zero.
GEODESIC_SKIP_START = (4.0, 0.0)
# Gain on the skip's weights (stored divided by it): Adam moves a weight by at most about lr per
# step, so at lr 2e-4 the effective weights drift by at most 0.02 a step and stay near their
# start over a stage while the rest of the decoder adapts to them.
GEODESIC_SKIP_GAIN = 100.0
# Input voxels per chunk of `UpBlock.forward_projected` (8 x cout x chunk floats stay in cache).
_PROJECT_CHUNK = 8192


@dataclass(frozen=True)
class DecoderConfig:
    """Widths of the five decoder stages, coarse (2^3) to fine (32^3), and the head.

    ``block_channels[i]`` is the PSAP width at stage i (after the skip concat),
    ``up_channels[i]`` the output width of the i-th transposed conv (up5 -> 64^3),
    ``prompt_channels`` 3 for ``[Y, P, N]`` or 5 with the geodesic maps ``[Gp, Gn]``;
    ``geodesic_skip`` adds the geodesic maps, weighted, to the output logits (`PSAPDecoder`).
    """

    skip_channels: tuple[int, int, int, int]
    block_channels: tuple[int, int, int, int, int]
    up_channels: tuple[int, int, int, int, int]
    hidden: tuple[int, int, int, int, int]
    kernel: tuple[int, int, int, int, int]
    head_kernel: int
    with_quality_head: bool
    prompt_channels: int = PROMPT_CHANNELS
    geodesic_skip: bool = False

    @staticmethod
    def release() -> DecoderConfig:
        """The official decoder: 256-wide PSAP, 128 hidden, k3 everywhere, k3 head."""
        return DecoderConfig((128, 128, 128, 256), (256, 256, 256, 256, 128), (128, 128, 128, 128, 64),
                             (128,) * 5, (3,) * 5, 3, True)

    @staticmethod
    def compact(prompt_channels: int = PROMPT_CHANNELS, geodesic_skip: bool = False) -> DecoderConfig:
        """Our CPU decoder: narrow, k3 modulation up to 16^3, 1x1 at 32^3, 1x1 head."""
        return DecoderConfig((16, 32, 64, 128), (128, 128, 64, 32, 16), (64, 32, 16, 16, 8),
                             (32, 32, 32, 16, 16), (3, 3, 3, 3, 1), 1, False, prompt_channels, geodesic_skip)


def prompt_on_grid(prompt: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """The prompt ``[B, C, 64, 64, 64]`` on a decoder stage's grid (trilinear; itself when it fits)."""
    if tuple(prompt.shape[2:]) == tuple(size):
        return prompt
    return F.interpolate(prompt, size=tuple(size), mode="trilinear", align_corners=False)


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channel axis of ``[B, C, D, H, W]`` (affine, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # One fused layer_norm over a channels-last view instead of five elementwise passes
        # (the 64-channel 64^3 map of the last stage made those a tenth of a release click).
        y = F.layer_norm(x.permute(0, 2, 3, 4, 1), (x.shape[1],), self.weight, self.bias, self.eps)
        return y.permute(0, 4, 1, 2, 3).contiguous()


class UpBlock(nn.Module):
    """ConvTranspose3d k2 s2 + channel LayerNorm + GELU (release key ``cna``).

    Computed channels-last: a k2 s2 transposed conv is one matrix product per input voxel
    (``cin -> 8 * cout``) followed by a voxel shuffle, and the LayerNorm then runs on the last
    axis without the two layout copies of `ChannelLayerNorm`. Same weights and result (to float
    rounding) as ``self.cna``; on CPU it is 5-10x faster than PyTorch's transposed 3-D conv,
    which has no oneDNN kernel (the 32^3 -> 64^3 step was the slowest op of a compact click).
    """

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cna = nn.Sequential(nn.ConvTranspose3d(cin, cout, 2, stride=2), ChannelLayerNorm(cout), nn.GELU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, cout, 2D, 2H, 2W]``, laid out channels-last (a permuted view of `forward_channels_last`)."""
        return self.forward_channels_last(x).permute(0, 4, 1, 2, 3)

    def forward_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """The block's output as ``[B, 2D, 2H, 2W, cout]`` (contiguous)."""
        conv, norm = self.cna[0], self.cna[1]
        b, cin, d, h, w = x.shape
        cout = conv.out_channels
        # rows: input voxels; columns: (kernel offset z, y, x, output channel), channel fastest
        weight = conv.weight.permute(0, 2, 3, 4, 1).reshape(cin, 8 * cout)
        y = torch.addmm(conv.bias.repeat(8), x.permute(0, 2, 3, 4, 1).reshape(-1, cin), weight)
        y = y.view(b, d, h, w, 2, 2, 2, cout).permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(b, 2 * d, 2 * h, 2 * w, cout)
        return F.gelu(F.layer_norm(y, (cout,), norm.weight, norm.bias, norm.eps))

    def forward_projected(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """``weight . block(x) + bias`` per output voxel, ``[B, 1, 2D, 2H, 2W]``: a 1x1 head on the block.

        Same result (to float rounding) as `forward_channels_last` followed by the head, ~3x faster
        on CPU for the 64^3 output: the product runs per kernel offset with channels on the middle
        axis, the LayerNorm's mean is folded into the weights (centred over output channels), the
        norm, GELU and head run on cache-sized chunks of input voxels, and the voxel shuffle moves
        one channel instead of ``cout`` (torch's LayerNorm over 8 channels alone cost a tenth of a
        first click).
        """
        conv, norm = self.cna[0], self.cna[1]
        b, cin, d, h, w = x.shape
        cout = conv.out_channels
        rows = conv.weight.permute(2, 3, 4, 1, 0).reshape(8, cout, cin)  # (kernel z, y, x), channel, input
        rows = (rows - rows.mean(dim=1, keepdim=True)).reshape(8 * cout, cin)
        shift = (conv.bias - conv.bias.mean()).repeat(8)[:, None]
        gamma, beta, head = (v.reshape(1, cout, 1) for v in (norm.weight, norm.bias, weight))
        parts = []
        for item in x.permute(0, 2, 3, 4, 1).reshape(b, d * h * w, cin):  # a view when x is channels-last
            for chunk in item.split(_PROJECT_CHUNK, dim=0):
                centred = torch.addmm(shift, rows, chunk.t()).view(8, cout, -1)
                scale = torch.rsqrt(centred.square().mean(dim=1, keepdim=True) + norm.eps)
                parts.append((F.gelu(torch.addcmul(beta, centred * scale, gamma)) * head).sum(dim=1))
        out = torch.cat(parts, dim=1).view(2, 2, 2, b, d, h, w).permute(3, 4, 0, 5, 1, 6, 2)
        return (out.reshape(b, 1, 2 * d, 2 * h, 2 * w) + bias).contiguous()


class SPADE(nn.Module):
    """Instance norm whose per-voxel scale and shift are predicted from the prompt map.

    Inference on CPU takes an exact shortcut when the prompt is sparse (a first click: Y = 0 and
    one Gaussian): more than ``2 * (kernel // 2)`` voxels away from the prompt's support the
    modulation maps only depend on the distance to the patch border, so they are computed once
    on a tiny cube and only a box around the clicks is convolved (`_sparse_modulation`).
    """

    # Shortcut only when the box to convolve is at most this fraction of the grid, and only for
    # stages whose dense gamma+beta convs cost at least this many multiply-adds (below that the
    # bookkeeping costs more than it saves: the compact decoder's narrow stages).
    SPARSE_MAX_FRACTION = 0.5
    SPARSE_MIN_MACS = 5e8

    def __init__(self, channels: int, hidden: int, kernel: int, prompt_channels: int = PROMPT_CHANNELS) -> None:
        super().__init__()
        pad = kernel // 2
        self.pad = pad
        self.norm = nn.InstanceNorm3d(channels, affine=False)
        self.mlp_shared = nn.Sequential(Conv3d(PROMPT_CHANNELS, hidden, kernel, padding=pad), nn.ReLU())
        # the geodesic maps [Gp, Gn] enter through their own convolution, added before the ReLU
        self.mlp_geodesic: Conv3d | None = None
        if prompt_channels == GEODESIC_PROMPT_CHANNELS:
            self.mlp_geodesic = Conv3d(prompt_channels - PROMPT_CHANNELS, hidden, kernel, padding=pad, bias=False)
            with torch.no_grad():
                self.mlp_geodesic.weight.div_(GEODESIC_GAIN)
        elif prompt_channels != PROMPT_CHANNELS:
            raise ValueError(f"prompt_channels must be {PROMPT_CHANNELS} or {GEODESIC_PROMPT_CHANNELS}, "
                             f"got {prompt_channels}")
        self.mlp_gamma = Conv3d(hidden, channels, kernel, padding=pad)
        self.mlp_beta = Conv3d(hidden, channels, kernel, padding=pad)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        prompt = prompt_on_grid(prompt, x.shape[2:])
        mod = None
        if self.pad == 0:
            mod = self._pointwise_modulation(prompt)
        elif self.mlp_geodesic is None and prompt.device.type == "cpu" and not torch.is_grad_enabled():
            mod = self._sparse_modulation(prompt)  # geodesic maps are dense: no shortcut for them
        if mod is None:
            mod = self._dense_modulation(prompt)
        scale, shift = mod
        return torch.addcmul(shift, self.norm(x), scale)

    def _merged_weights(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The modulation as two convolutions: ``[Y, P, N] (+ gain * [Gp, Gn]) -> hidden -> [1 + gamma; beta]``.

        The shared and geodesic convolutions read disjoint prompt channels and are summed, so they
        are one convolution over all channels; gamma and beta read the same hidden map, so they are
        one convolution with both outputs stacked, the 1 of ``1 + gamma`` in its bias. Same maps,
        half the calls (on CPU each small 3-D convolution costs several times its arithmetic in
        per-call setup) and one elementwise pass less.
        """
        shared = self.mlp_shared[0]
        weight = shared.weight
        if self.mlp_geodesic is not None:
            weight = torch.cat([weight, GEODESIC_GAIN * self.mlp_geodesic.weight], dim=1)
        out_weight = torch.cat([self.mlp_gamma.weight, self.mlp_beta.weight])
        out_bias = torch.cat([_bias(self.mlp_gamma) + 1, _bias(self.mlp_beta)])
        return weight, _bias(shared), out_weight, out_bias

    def _dense_modulation(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + gamma, beta)`` of a SPADE with kernel > 1: two convolutions (`_merged_weights`)."""
        weight, bias, out_weight, out_bias = self._merged_weights()
        act = torch.relu(conv3d(prompt, weight, bias, self.pad))
        scale, shift = conv3d(act, out_weight, out_bias, self.pad).chunk(2, dim=1)
        return scale, shift

    def _pointwise_modulation(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(1 + gamma, beta)`` of a kernel-1 SPADE as two matrix products over the voxels.

        The same maps as its 1x1x1 convolutions (`_merged_weights`), without the per-call setup of
        small 3-D convs, which cost several times their arithmetic on CPU.
        """
        b, c = prompt.shape[:2]
        weight, bias, out_weight, out_bias = self._merged_weights()
        weight, out_weight = weight.flatten(1), out_weight.flatten(1)
        act = torch.relu(torch.baddbmm(bias[None, :, None], weight.expand(b, -1, -1), prompt.reshape(b, c, -1)))
        mod = torch.baddbmm(out_bias[None, :, None], out_weight.expand(b, -1, -1), act)
        scale, shift = mod.view(b, -1, *prompt.shape[2:]).chunk(2, dim=1)
        return scale, shift

    def forward_rows(self, rows: torch.Tensor, prompt_rows: torch.Tensor) -> torch.Tensor:
        """A kernel-1 SPADE on one item's voxel rows: ``rows [V, C]``, ``prompt_rows [V, prompt channels]``.

        Same result (to float rounding) as `forward` on the channels-last map the rows view. The
        instance norm's mean m and inverse deviation r are folded into the output matrix products
        (``(x - m) * r * scale + shift = x * (r * scale) + (shift - m * r * scale)``, both linear in
        the hidden map), and its sums are matrix products too (a column sum and the Gram matrix's
        diagonal), so no pass over the map runs besides the four products and one ``addcmul``.
        """
        n = rows.shape[0]
        weight, bias, out_weight, out_bias = self._merged_weights()
        act = torch.relu(torch.addmm(bias, prompt_rows, weight.flatten(1).t()))
        mean = torch.mv(rows.t(), rows.new_ones(n)) / n
        var = (torch.mm(rows.t(), rows).diagonal() / n - mean.square()).clamp_min(0)
        inv = torch.rsqrt(var + self.norm.eps)
        w_scale, w_shift = out_weight.flatten(1).t().chunk(2, dim=1)  # [hidden, C] each
        b_scale, b_shift = out_bias.chunk(2)
        mult = w_scale * inv
        scale = torch.addmm(b_scale * inv, act, mult)
        shift = torch.addmm(b_shift - b_scale * inv * mean, act, w_shift - mult * mean)
        return torch.addcmul(shift, rows, scale)

    def _sparse_modulation(self, prompt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(1 + gamma, beta)`` equal to the dense ones (to float rounding), or None when not worth it.

        With ``r = kernel // 2`` and the prompt zero outside box B: ``act = relu(conv(prompt))``
        is the constant ``a0 = relu(bias)`` outside ``B + r``, so gamma/beta are, outside
        ``A = B + 2r``, the convolution of a constant field, which varies only within ``r`` of the
        patch border (27 border classes, read off a ``(2r+1)^3`` cube). Inside A they are
        convolved without padding from ``act`` on ``A + r`` (exact on any box holding B),
        zero-padded only where that box meets the patch border, as the dense conv is.
        """
        r, size = self.pad, prompt.shape[2:]
        macs = 2 * size.numel() * self.mlp_gamma.in_channels * self.mlp_gamma.out_channels * (2 * r + 1) ** 3
        if min(size) < 2 * r + 1 or macs < self.SPARSE_MIN_MACS:
            return None
        support = prompt.detach().abs().amax(dim=(0, 1)) > 0
        box: list[tuple[int, int]] = []
        for axis in range(3):
            nz = torch.nonzero(support.any(dim=tuple(a for a in range(3) if a != axis))).flatten()
            if len(nz) == 0:
                box = []
                break
            box.append((max(int(nz[0]) - 2 * r, 0), min(int(nz[-1]) + 1 + 2 * r, size[axis])))
        if box and math.prod(hi - lo for lo, hi in box) > self.SPARSE_MAX_FRACTION * size.numel():
            return None
        _, bias, out_weight, out_bias = self._merged_weights()
        cube = torch.relu(bias).to(prompt.dtype)[None, :, None, None, None].expand(1, -1, 2 * r + 1, 2 * r + 1, 2 * r + 1)
        index = [torch.cat([torch.arange(r), torch.full((n - 2 * r,), r), torch.arange(r + 1, 2 * r + 1)]) for n in size]
        act = None
        if box:
            ext = [(max(lo - r, 0), min(hi + r, n)) for (lo, hi), n in zip(box, size)]
            act = self.mlp_shared(prompt[(slice(None), slice(None), *(slice(a, b) for a, b in ext))])
            zeros = [(r - (lo - a), r - (b - hi)) for (lo, hi), (a, b) in zip(box, ext)]  # beyond the border
            act = F.pad(act, [p for side in reversed(zeros) for p in side])
        small = conv3d(cube, out_weight, out_bias, r)
        full = small[:, :, index[0]][:, :, :, index[1]][:, :, :, :, index[2]]
        full = full.expand(prompt.shape[0], -1, -1, -1, -1).contiguous()
        if act is not None:
            full[(slice(None), slice(None), *(slice(lo, hi) for lo, hi in box))] = conv3d(act, out_weight, out_bias)
        scale, shift = full.chunk(2, dim=1)
        return scale, shift


def _bias(conv: nn.Conv3d) -> torch.Tensor:
    """A convolution's bias, zeros when it has none."""
    return conv.bias if conv.bias is not None else conv.weight.new_zeros(conv.out_channels)


class PSAPBlock(nn.Module):
    """SPADE residual block: x + conv(act(SPADE(conv(act(SPADE(x))))))."""

    def __init__(self, channels: int, hidden: int, kernel: int, prompt_channels: int = PROMPT_CHANNELS) -> None:
        super().__init__()
        self.norm_0 = SPADE(channels, hidden, kernel, prompt_channels)
        self.conv_0 = Conv3d(channels, channels, 3, padding=1)
        self.norm_1 = SPADE(channels, hidden, kernel, prompt_channels)
        self.conv_1 = Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        if self.norm_0.pad == 0 and x.device.type == "cpu":
            return self._forward_channels_last(x, prompt)
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, prompt), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, prompt), 0.2))
        return x + dx

    def _forward_channels_last(self, x: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """`forward` with kernel-1 modulation, computed channels-last; returns a channels-last map.

        The compact decoder's 32^3 stage: oneDNN runs its two 16-channel k3 convolutions faster
        channels-last (2.3 vs 3.0 ms each in a decoder run on 2 cores), its input already is (a view
        of `UpBlock`'s output), and the modulation and instance norm run on voxel rows
        (`SPADE.forward_rows`) without a layout copy. Same result to float rounding.
        """
        b, c, *size = x.shape
        prompt_rows = prompt_on_grid(prompt, size).flatten(2).transpose(1, 2)  # [B, V, prompt channels], a view

        def modulated(norm: SPADE, t: torch.Tensor) -> torch.Tensor:  # channels-last in and out
            rows = t.permute(0, 2, 3, 4, 1).reshape(b, -1, c)  # a view when t is channels-last
            out = torch.stack([norm.forward_rows(r, p) for r, p in zip(rows, prompt_rows)]) if b > 1 \
                else norm.forward_rows(rows[0], prompt_rows[0])[None]
            return F.leaky_relu(out, 0.2).view(b, *size, c).permute(0, 4, 1, 2, 3)

        dx = conv3d(modulated(self.norm_0, x), self.conv_0.weight, self.conv_0.bias, 1, channels_last=True)
        dx = conv3d(modulated(self.norm_1, dx), self.conv_1.weight, self.conv_1.bias, 1, channels_last=True)
        return x + dx


class QualityHead(nn.Module):
    """MLP 64-256-256-2 on the pooled last feature map (release key ``iou_prediction_head``)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([nn.Linear(cin, 256), nn.Linear(256, 256), nn.Linear(256, 2)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.mean(dim=(2, 3, 4))
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


class PSAPDecoder(nn.Module):
    """U-decoder over encoder features ``[f1 (16^3), f2 (8^3), f3 (4^3), f4 (2^3)]``.

    With ``geodesic_skip`` the logits also get ``GEODESIC_SKIP_GAIN * (w_p * Gp + w_n * Gn)``, two
    learned weights on the full-resolution geodesic maps. Thresholded on its own, Gp matches a
    structure in its patch far better than the trained network's first click did (the left and
    right `val` lungs: Dice 0.89 / 0.93 at Gp > 0.2 vs 0.41 / 0.18): the modulated decoder had not
    learned to pass a homogeneous region's extent through, and this direct path lets it.
    """

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        blk, up = cfg.block_channels, cfg.up_channels
        self.prompt_channels = cfg.prompt_channels
        for i in range(5):
            setattr(self, f"spade{i + 1}", PSAPBlock(blk[i], cfg.hidden[i], cfg.kernel[i], cfg.prompt_channels))
            nxt = blk[i + 1] - (cfg.skip_channels[2 - i] if i < 3 else 0) if i < 4 else None
            cout = up[i]
            if nxt is not None and nxt != cout:
                raise ValueError(f"decoder stage {i + 2}: {cout} up channels + skip != {blk[i + 1]}")
            setattr(self, f"upscale{i + 1}", UpBlock(blk[i], cout))
        self.mask_prediction_head = nn.Sequential(
            Conv3d(up[4], 2, cfg.head_kernel, padding=cfg.head_kernel // 2)
        )
        self.iou_prediction_head = QualityHead(up[4]) if cfg.with_quality_head else None
        self.geodesic_skip: nn.Parameter | None = None
        if cfg.geodesic_skip:
            if cfg.prompt_channels != GEODESIC_PROMPT_CHANNELS:
                raise ValueError("geodesic_skip needs the geodesic prompt channels (prompt_channels "
                                 f"{GEODESIC_PROMPT_CHANNELS})")
            self.geodesic_skip = nn.Parameter(torch.tensor(GEODESIC_SKIP_START) / GEODESIC_SKIP_GAIN)

    def forward(self, feats: list[torch.Tensor], prompt: torch.Tensor) -> torch.Tensor:
        """Return mask logits ``[B, 1, 64, 64, 64]`` (sigmoid gives the release's output).

        Args:
            feats: encoder maps, fine to coarse.
            prompt: ``[B, prompt_channels, 64, 64, 64]`` in the order [Y, P, N] (+ [Gp, Gn]).
        """
        f1, f2, f3, f4 = feats
        resized: dict[tuple[int, ...], torch.Tensor] = {}

        def prompt_at(x: torch.Tensor) -> torch.Tensor:  # the prompt at a stage's size, resized once per pass
            size = tuple(x.shape[2:])
            if size not in resized:
                resized[size] = prompt_on_grid(prompt, size)
            return resized[size]

        x = self.spade1(f4, prompt_at(f4))
        for i, skip in enumerate((f3, f2, f1)):
            x = torch.cat([getattr(self, f"upscale{i + 1}")(x), skip], dim=1)
            x = getattr(self, f"spade{i + 2}")(x, prompt_at(x))
        x = self.upscale4(x)
        x = self.spade5(x, prompt_at(x))
        head = self.mask_prediction_head[0]
        if head.kernel_size == (1, 1, 1):  # a per-voxel linear map: only the foreground logit
            logits = self.upscale5.forward_projected(x, head.weight[0].flatten(), head.bias[0])
        else:
            logits = head(self.upscale5(x))[:, :1]
        if self.geodesic_skip is not None:
            # two fused multiply-adds: einsum's contraction over the two maps cost 10x more on CPU
            weight = GEODESIC_SKIP_GAIN * self.geodesic_skip.to(logits.dtype)
            geodesic = prompt[:, PROMPT_CHANNELS:].to(logits.dtype)
            for c in range(geodesic.shape[1]):
                logits = torch.addcmul(logits, geodesic[:, c:c + 1], weight[c])
        return logits
