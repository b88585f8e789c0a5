"""train layer of CTSAM3DLib: configs, data cache and sampler, losses, the Algorithm 1 trainer, DDP."""

from CTSAM3DLib.train.config import TrainConfig
from CTSAM3DLib.train.trainer import train

__all__ = ["TrainConfig", "train"]
