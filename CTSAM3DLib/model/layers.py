"""Shared layers.

``Conv3d`` is ``torch.nn.Conv3d`` with one CPU fix: for batch 1 PyTorch routes small 3-D
convolutions (``N*C*D*H <= 20480``) to its slow im2col kernel instead of oneDNN, which is
5-8x slower for our 16^3/32^3 decoder stages. We call oneDNN directly in that case; the
parameters, state-dict keys and results (to float rounding) are unchanged, and autograd works.
"""

from __future__ import annotations

import torch
from torch import nn


class Conv3d(nn.Conv3d):
    """``nn.Conv3d`` that always uses oneDNN on CPU float32 (same weights and keys)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (x.device.type == "cpu" and x.dtype == torch.float32 and self.padding_mode == "zeros"
                and isinstance(self.padding, tuple) and torch.backends.mkldnn.is_available()):
            return torch.mkldnn_convolution(x.contiguous(), self.weight, self.bias, self.padding,
                                            self.stride, self.dilation, self.groups)
        return super().forward(x)
