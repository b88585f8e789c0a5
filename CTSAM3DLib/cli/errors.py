"""Which exceptions are the user's mistakes (one-paragraph message, no traceback)."""

from __future__ import annotations

from CTSAM3DLib.model.predictor import DeviceError

# Raised for bad input files, points, checkpoints, devices or output paths.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileExistsError, FileNotFoundError, DeviceError,
                                                ImportError)
