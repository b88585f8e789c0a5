"""``load_model``: the one entry point that turns a checkpoint (or nothing) into a ``Predictor``."""

from __future__ import annotations

from pathlib import Path

import torch

from CTSAM3DLib import bundled
from CTSAM3DLib.model.checkpoint import CheckpointError, load_network, sha256_of
from CTSAM3DLib.model.predictor import Predictor, resolve_device


def load_model(path: str | Path | None = None, device: str | torch.device = "cpu",
               window_hu: tuple[float, float] | None = None, use_amp: bool = False) -> Predictor:
    """Load a checkpoint into a ``Predictor``.

    Args:
        path: our checkpoint or the official ``params.pth``; None loads the bundled
            default weights after verifying their recorded SHA-256.
        device: ``"cpu"`` or ``"cuda"`` (an error if CUDA is absent).
        window_hu: HU window override; required for a release checkpoint without ``config.py``.
        use_amp: bf16 autocast on CUDA.

    Raises:
        CheckpointError: unreadable, tampered, or of unknown layout.
        RuntimeError: CUDA asked for but absent.
    """
    resolve_device(device)
    if path is None:
        path = bundled.default_weights_path()
        verify_default_weights(path)
    model, variant, window, info = load_network(path, window_hu)
    info["path"] = str(path)
    return Predictor(model, variant, window, device=device, use_amp=use_amp, info=info)


def verify_default_weights(path: Path) -> None:
    """Refuse bundled weights that are missing or whose SHA-256 differs from the recorded one."""
    if not path.is_file() or not bundled.DEFAULT_WEIGHTS_SHA256:
        raise CheckpointError(f"The bundled default weights are missing ({path}). Reinstall CTSAM3DLib or pass a "
                              "checkpoint path explicitly.")
    digest = sha256_of(path)
    if digest != bundled.DEFAULT_WEIGHTS_SHA256:
        raise CheckpointError(
            f"The bundled default weights {path} fail their integrity check: SHA-256 {digest} differs from the "
            f"recorded {bundled.DEFAULT_WEIGHTS_SHA256}. The file was modified or corrupted; reinstall CTSAM3DLib."
        )
