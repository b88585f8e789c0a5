"""ResT-v2 image encoder in 3-D, with the official release's layout and key names.

A hierarchical transformer: a stride-4 convolutional stem, then four stages of
pre-norm blocks whose attention reduces keys/values by a depthwise strided conv
(ratios 8, 4, 2, 1) and adds back an up-sampled identity path of the values.
Each stage's output is mapped by a 1x1x1 conv ("channel mapper") for the decoder.
For a 64^3 patch the release variants give 128@16^3, 128@8^3, 128@4^3, 256@2^3.

Tensors are ``[B, C, D, H, W]``; tokens are ``[B, D*H*W, C]`` in (z, y, x) raster order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from CTSAM3DLib.model.layers import Conv3d

# LayerNorm epsilon used throughout ResT-v2.
LN_EPS = 1e-6


@dataclass(frozen=True)
class EncoderConfig:
    """Widths and depths of one ResT-v2 variant."""

    embed_dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    num_heads: tuple[int, int, int, int]
    out_channels: tuple[int, int, int, int]
    sr_ratios: tuple[int, int, int, int] = (8, 4, 2, 1)
    mlp_ratio: int = 4


class PixelAttention(nn.Module):
    """Positional gate ``x * sigmoid(depthwise_conv3x3(x))``."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.pa_conv = Conv3d(dim, dim, 3, padding=1, groups=dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.pa_conv(x))


class ConvStem(nn.Module):
    """Stride-4 stem: two stride-2 conv-BN-ReLU, a 1x1 conv, pixel attention, LayerNorm."""

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(
            Conv3d(in_ch, dim // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(dim // 2),
            nn.ReLU(inplace=True),
            Conv3d(dim // 2, dim, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm3d(dim),
            nn.ReLU(inplace=True),
            Conv3d(dim, dim, 1),
        )
        self.pos = PixelAttention(dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = self.pos(self.proj(x))
        grid = tuple(x.shape[2:])
        return self.norm(x.flatten(2).transpose(1, 2)), grid  # type: ignore[return-value]


class PatchEmbed(nn.Module):
    """Stride-2 downsampling between stages: conv k3 s2, pixel attention, LayerNorm."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = Conv3d(in_dim, dim, 3, stride=2, padding=1)
        self.pos = PixelAttention(dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        x = self.pos(self.proj(x))
        grid = tuple(x.shape[2:])
        return self.norm(x.flatten(2).transpose(1, 2)), grid  # type: ignore[return-value]


class Attention(nn.Module):
    """Efficient multi-head self-attention with spatial reduction and an up-sampled identity."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, dim * 2)
        self.sr_ratio = sr_ratio
        if sr_ratio > 1:
            self.sr = Conv3d(dim, dim, sr_ratio + 1, stride=sr_ratio, padding=sr_ratio // 2, groups=dim)
            self.sr_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.up_norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        b, n, c = x.shape
        h, hd = self.num_heads, c // self.num_heads
        q = self.q(x).reshape(b, n, h, hd).transpose(1, 2)
        kv_grid = grid
        if self.sr_ratio > 1:
            y = self.sr(x.transpose(1, 2).reshape(b, c, *grid))
            kv_grid = tuple(y.shape[2:])  # type: ignore[assignment]
            x = self.sr_norm(y.flatten(2).transpose(1, 2))
        k, v = self.kv(x).reshape(b, -1, 2, h, hd).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, scale=self.scale)
        out = out.transpose(1, 2).reshape(b, n, c)
        identity = v.transpose(-1, -2).reshape(b, c, *kv_grid)
        if kv_grid != grid:
            identity = F.interpolate(identity, size=grid, mode="trilinear", align_corners=False)
        identity = identity.flatten(2).transpose(1, 2)
        return self.proj(out + self.up_norm(identity))


class Mlp(nn.Module):
    """Linear(d, r*d) - GELU - Linear(r*d, d)."""

    def __init__(self, dim: int, ratio: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim * ratio)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim * ratio, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_ratio)

    def forward(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), grid)
        return x + self.mlp(self.norm2(x))


class ResTEncoder(nn.Module):
    """ResT-v2 3-D encoder returning four channel-mapped feature maps (fine to coarse)."""

    def __init__(self, cfg: EncoderConfig, in_ch: int = 1) -> None:
        super().__init__()
        d = cfg.embed_dims
        self.stem = ConvStem(in_ch, d[0])
        self.patch_2 = PatchEmbed(d[0], d[1])
        self.patch_3 = PatchEmbed(d[1], d[2])
        self.patch_4 = PatchEmbed(d[2], d[3])
        for i in range(4):
            blocks = [Block(d[i], cfg.num_heads[i], cfg.sr_ratios[i], cfg.mlp_ratio) for _ in range(cfg.depths[i])]
            setattr(self, f"stage{i + 1}", nn.ModuleList(blocks))
            setattr(self, f"channel_mapper{i + 1}", Conv3d(d[i], cfg.out_channels[i], 1))

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encode ``image [B, 1, D, H, W]`` (scaled to [0, 1]) into four feature maps."""
        feats: list[torch.Tensor] = []
        x = image
        embeds = (self.stem, self.patch_2, self.patch_3, self.patch_4)
        for i, embed in enumerate(embeds):
            tokens, grid = embed(x)
            for blk in getattr(self, f"stage{i + 1}"):
                tokens = blk(tokens, grid)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, *grid)
            feats.append(getattr(self, f"channel_mapper{i + 1}")(x))
        return feats
