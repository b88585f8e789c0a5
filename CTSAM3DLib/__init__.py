"""CTSAM3DLib: click-prompted 3-D segmentation of anatomy in CT (CT-SAM3D), headless.

The public names are imported on first use (PEP 562), so that light entry points such as
``ctsam3d --help`` do not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Public name -> module that defines it.
_PUBLIC = {
    "Click": "CTSAM3DLib.prompts.click",
    "Predictor": "CTSAM3DLib.model.predictor",
    "Session": "CTSAM3DLib.engine.session",
    "SessionConfig": "CTSAM3DLib.engine.session",
    "Volume": "CTSAM3DLib.io.volume",
    "build_model": "CTSAM3DLib.model.build",
    "load_model": "CTSAM3DLib.api",
}

__all__ = sorted(_PUBLIC)

if TYPE_CHECKING:
    from CTSAM3DLib.api import load_model
    from CTSAM3DLib.engine.session import Session, SessionConfig
    from CTSAM3DLib.io.volume import Volume
    from CTSAM3DLib.model.build import build_model
    from CTSAM3DLib.model.predictor import Predictor
    from CTSAM3DLib.prompts.click import Click


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'CTSAM3DLib' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value
