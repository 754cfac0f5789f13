"""The training loop shared by all learned methods: config, seeding, device, checkpoints."""

from vemrestore.train._config import TrainConfig
from vemrestore.train._loop import (
    CHECKPOINT_NAME,
    TrainResult,
    fit_model,
    pixel_loss,
    resolve_device,
)

__all__ = [
    "CHECKPOINT_NAME",
    "TrainConfig",
    "TrainResult",
    "fit_model",
    "pixel_loss",
    "resolve_device",
]
