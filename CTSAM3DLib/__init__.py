"""CTSAM3DLib: click-prompted 3-D segmentation of anatomy in CT (CT-SAM3D), headless."""

from CTSAM3DLib.api import load_model
from CTSAM3DLib.engine.session import Session, SessionConfig
from CTSAM3DLib.io.volume import Volume
from CTSAM3DLib.model.build import build_model
from CTSAM3DLib.model.predictor import Predictor
from CTSAM3DLib.prompts.click import Click

__all__ = ["Click", "Predictor", "Session", "SessionConfig", "Volume", "build_model", "load_model"]
