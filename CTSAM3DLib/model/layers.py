"""Shared layers.

``Conv3d`` is ``torch.nn.Conv3d`` with one CPU fix: for batch 1 PyTorch routes small 3-D
convolutions (``N*C*D*H <= 20480``) to its slow im2col kernel instead of oneDNN, which is
5-8x slower for our 16^3/32^3 decoder stages. We call oneDNN directly in that case; the
parameters, state-dict keys and results (to float rounding) are unchanged, and autograd works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int | tuple[int, int, int] = 0,
           stride: int | tuple[int, int, int] = 1, dilation: int | tuple[int, int, int] = 1,
           groups: int = 1, channels_last: bool = False) -> torch.Tensor:
    """``F.conv3d`` (zero padding) that always uses oneDNN for CPU float32 inputs.

    ``channels_last``: convolve in that layout (input, weight and output). oneDNN runs narrow maps
    (the compact decoder's 16-channel 32^3 stage) faster in it and wide ones slower, so callers ask.
    """
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    if (x.device.type == "cpu" and x.dtype == torch.float32 and torch.backends.mkldnn.is_available()
            and not torch.compiler.is_compiling()):  # inductor picks its own kernels; it cannot trace this call
        triple = (lambda v: (v,) * 3 if isinstance(v, int) else tuple(v))
        return torch.mkldnn_convolution(x.contiguous(memory_format=layout), weight.contiguous(memory_format=layout),
                                        bias, triple(padding), triple(stride), triple(dilation), groups)
    return F.conv3d(x.contiguous(memory_format=layout), weight, bias, stride, padding, dilation, groups)


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that always uses oneDNN on CPU float32 (same weights and keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.padding_mode == "zeros" and isinstance(self.padding, tuple):
            return conv3d(x, self.weight, self.bias, self.padding, self.stride, self.dilation, self.groups)
        return super().forward(x)
