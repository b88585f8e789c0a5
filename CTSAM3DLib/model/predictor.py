"""``Predictor``: a loaded network with its intensity window and device, at patch level.

This is what ``CTSAM3DLib.load_model`` returns. It owns the only intensity scaling of the
project (clamp to the window, scale to [0, 1]) and the device/AMP policy, and exposes the
patch-level API ``predict_patch`` as well as the split ``encode`` / ``decode`` / ``cpp``
steps that the engine caches between clicks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from CTSAM3DLib.model.ctsam3d import CTSAM3D
from CTSAM3DLib.model.decoder import PROMPT_CHANNELS
from CTSAM3DLib.prompts.heatmap import prompt_tensor


class DeviceError(RuntimeError):
    """The requested compute device does not exist here (e.g. CUDA without a GPU)."""


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``"cpu"``/``"cuda"``/``"cuda:1"``/``"mps"`` into a device, refusing one that is absent here."""
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise DeviceError(f"Unknown device {str(device)!r}: use 'cpu', 'cuda' or 'mps'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            f"Device {str(device)!r} was asked for, but CUDA is not available here (no NVIDIA GPU, driver, "
            "or a CPU-only PyTorch build). Use --device cpu, or install a CUDA build of PyTorch."
        )
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise DeviceError(f"Device {str(device)!r} was asked for, but Apple's MPS backend is not available here "
                          "(it needs a Mac with Apple silicon and a PyTorch build with MPS). Use --device cpu.")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"Unsupported device {str(device)!r}: use 'cpu', 'cuda' or 'mps'.")
    return dev


def scale_window(hu: np.ndarray | torch.Tensor, window_hu: tuple[float, float]) -> torch.Tensor:
    """Clamp HU to the window and scale to [0, 1], float32 on the input's device.

    The project's only intensity normalisation: inference (`Predictor.scale`) and training
    (`train.data`) both call it, so the two can never drift apart.
    """
    lo, hi = float(window_hu[0]), float(window_hu[1])
    return (torch.as_tensor(hu, dtype=torch.float32).clamp(lo, hi) - lo) / (hi - lo)


class Predictor:
    """A network ready for inference on one device.

    Args:
        model: the network (moved to ``device`` and put in eval mode here).
        variant: registry name of the variant.
        window_hu: ``(min, max)`` HU window of the intensity scaling.
        device: ``"cpu"`` or ``"cuda"``.
        use_amp: run under bf16 autocast (CUDA only; off by default for exact outputs).
        info: provenance and format of the checkpoint it came from.
    """

    def __init__(self, model: CTSAM3D, variant: str, window_hu: tuple[float, float],
                 device: str | torch.device = "cpu", use_amp: bool = False, info: dict[str, Any] | None = None) -> None:
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self.variant = variant
        self.window_hu = (float(window_hu[0]), float(window_hu[1]))
        self.use_amp = bool(use_amp and self.device.type == "cuda")
        self.info = dict(info or {})

    def scale(self, hu: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Clamp HU to the window and scale to [0, 1]; returns float32 on the device."""
        return scale_window(torch.as_tensor(hu, dtype=torch.float32).to(self.device), self.window_hu)

    @contextlib.contextmanager
    def _mode(self) -> Iterator[None]:
        with torch.inference_mode():
            if self.use_amp:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    yield
            else:
                yield

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Encoder features for ``image [B, 1, 64, 64, 64]`` in [0, 1]."""
        with self._mode():
            return self.model.encode(image.to(self.device))

    @property
    def needs_image(self) -> bool:
        """True when ``decode`` needs the patch pixels (geodesic prompts, variant ``compact_geo``)."""
        return self.model.prompt_channels > PROMPT_CHANNELS

    def decode(self, feats: list[torch.Tensor], points: torch.Tensor, labels: torch.Tensor,
               prev_mask: torch.Tensor | None = None, image: torch.Tensor | None = None,
               refine_passes: int = 0) -> torch.Tensor:
        """Probabilities ``[B, 1, 64^3]`` from cached features and clicks (see ``predict_patch``).

        ``image`` (the scaled patches) is needed, and only used, when ``needs_image``. With
        ``refine_passes``, the decoder runs that many more times, each reading the last
        probabilities as its previous mask (the click maps are built once).
        """
        if self.needs_image and image is None:
            raise ValueError(f"variant {self.variant!r} reads geodesic click maps: decode() needs the patch image")
        image = image.to(self.device) if self.needs_image else None
        prompt = prompt_tensor(points.to(self.device), labels.to(self.device), prev_mask, size=64, image=image)
        with self._mode():
            prob = torch.sigmoid(self.model.decode_logits(feats, prompt).float())
            for _ in range(refine_passes):
                prompt[:, :1] = prob  # the prompt is this call's own: Y replaced in place, no copy of the maps
                prob = torch.sigmoid(self.model.decode_logits(feats, prompt).float())
            return prob

    def cpp(self, image_u: torch.Tensor, mask_u: torch.Tensor, image_v: torch.Tensor) -> torch.Tensor:
        """CPP heatmaps ``[B, 1, 64^3]`` for neighbours V of clicked patches U (binary mask_u)."""
        with self._mode():
            return self.model.predict_cpp(image_u, mask_u, image_v).float()

    def predict_patch(self, image: torch.Tensor, points: torch.Tensor, labels: torch.Tensor,
                      prev_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Segment one batch of 64^3 patches.

        Args:
            image: float ``[B, 1, 64, 64, 64]`` (z, y, x), already scaled to [0, 1].
            points: float ``[B, N, 3]`` voxel ``(x, y, z)`` inside the patch.
            labels: int ``[B, N]``; 1 positive, 0 negative, -1 ignored.
            prev_mask: previous probabilities ``[B, 1, 64, 64, 64]`` or None.

        Returns:
            Probabilities ``[B, 1, 64, 64, 64]`` on the predictor's device.
        """
        if image.ndim != 5 or tuple(image.shape[1:]) != (1, 64, 64, 64):
            raise ValueError(f"image must be [B,1,64,64,64]; got {tuple(image.shape)}")
        return self.decode(self.encode(image), points, labels, prev_mask, image)
