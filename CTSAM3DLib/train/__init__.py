"""train layer of CTSAM3DLib: configs, data cache and sampler, losses, one step of Algorithm 1 and its trainer, DDP."""

from CTSAM3DLib.train.config import TrainConfig
from CTSAM3DLib.train.trainer import train

__all__ = ["TrainConfig", "train"]
