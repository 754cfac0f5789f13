"""Diffusion building blocks: noise schedules (diffusers' DDIM), samplers, training targets.

Nothing here knows about electron microscopy. A method supplies a network
(``denoise_fn(x_t, t)``) and uses:

- ``DiffusionConfig`` / ``make_scheduler``: the schedule, saved beside the
  weights with ``save_scheduler_config``;
- ``diffusion_target`` / ``diffusion_loss``: what to train the network on;
- ``sample``: full or truncated few-step sampling, optionally keeping known
  pixels (masked restoration without retraining).

diffusers is imported only when a scheduler is made.
"""

from vemrestore.diffusion._config import (
    SCHEDULER_CONFIG_NAME,
    DiffusionConfig,
    load_scheduler_config,
    make_scheduler,
    save_scheduler_config,
)
from vemrestore.diffusion._loss import diffusion_loss, diffusion_target, predicted_original_sample
from vemrestore.diffusion._sample import sample, sampling_timesteps

__all__ = [
    "SCHEDULER_CONFIG_NAME",
    "DiffusionConfig",
    "diffusion_loss",
    "diffusion_target",
    "load_scheduler_config",
    "make_scheduler",
    "predicted_original_sample",
    "sample",
    "sampling_timesteps",
    "save_scheduler_config",
]
