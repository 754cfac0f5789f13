"""The training loop shared by all learned methods: config, seeding, device, checkpoints."""

from vemrestore.train._config import TrainConfig
from vemrestore.train._holdout import (
    Batch,
    fixed_validation,
    holdout_sections,
    split_batches,
)
from vemrestore.train._loop import (
    CHECKPOINT_NAME,
    TrainResult,
    fit_model,
    pixel_loss,
    resolve_device,
)
from vemrestore.train._torch_load import torch_load_reason

__all__ = [
    "CHECKPOINT_NAME",
    "Batch",
    "TrainConfig",
    "TrainResult",
    "fit_model",
    "fixed_validation",
    "holdout_sections",
    "pixel_loss",
    "resolve_device",
    "split_batches",
    "torch_load_reason",
]
