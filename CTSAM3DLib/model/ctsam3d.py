"""The CT-SAM3D network: image encoder, PSAP mask decoder and cross-patch prompt predictor.

The three parts are constructor arguments (as in SAM's ``Sam``); attribute names match
the official release's state-dict prefixes (``image_encoder.``, ``mask_decoder.``,
``cpp_predictor.``). Tensors are ``[B, C, D, H, W]`` = ``[B, C, z, y, x]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from CTSAM3DLib.model.decoder import PSAPDecoder
from CTSAM3DLib.model.encoder import ResTEncoder


class CTSAM3D(nn.Module):
    """Promptable 3-D segmentation network for 64^3 patches.

    Args:
        image_encoder: maps an image patch to four feature maps (computed once per patch).
        mask_decoder: maps features plus the ``[Y, P, N]`` prompt to mask logits.
        cpp_predictor: maps ``[image U, mask U, image V]`` to a click heatmap for V.
        cpp_scale: the CPP net runs on inputs average-pooled by this factor (1 = release).
    """

    def __init__(self, image_encoder: ResTEncoder, mask_decoder: PSAPDecoder, cpp_predictor: nn.Module,
                 cpp_scale: int = 1) -> None:
        super().__init__()
        self.image_encoder = image_encoder
        self.mask_decoder = mask_decoder
        self.cpp_predictor = cpp_predictor
        self.cpp_scale = cpp_scale

    @property
    def prompt_channels(self) -> int:
        """3 for ``[Y, P, N]``; 5 when the decoder also reads geodesic maps ``[Gp, Gn]``."""
        return self.mask_decoder.prompt_channels

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encode ``image [B, 1, 64, 64, 64]`` in [0, 1] into the decoder's skip features."""
        return self.image_encoder(image)

    def decode_logits(self, feats: list[torch.Tensor], prompt: torch.Tensor) -> torch.Tensor:
        """Mask logits ``[B, 1, 64, 64, 64]`` from features and the ``[Y, P, N]`` (+ ``[Gp, Gn]``) prompt."""
        return self.mask_decoder(feats, prompt)

    def forward(self, image: torch.Tensor, prompt: torch.Tensor) -> torch.Tensor:
        """Full pass: mask logits for ``image [B,1,64^3]`` and ``prompt [B,prompt_channels,64^3]``."""
        return self.decode_logits(self.encode(image), prompt)

    def predict_cpp(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        """Heatmap ``[B, 1, 64, 64, 64]`` of where to click in neighbour patch V.

        Args:
            image_u: clicked patch ``[B, 1, 64^3]`` in [0, 1].
            mask_u: its binarised mask ``[B, 1, 64^3]`` (0/1).
            image_v: neighbour patch ``[B, 1, 64^3]`` in [0, 1].
        """
        x = torch.cat([image_u, mask_u.to(image_u.dtype), image_v], dim=1)
        if self.cpp_scale == 1:
            return self.cpp_predictor(x)
        size = x.shape[2:]
        y = self.cpp_predictor(F.avg_pool3d(x, self.cpp_scale))
        return F.interpolate(y, size=size, mode="trilinear", align_corners=False)
