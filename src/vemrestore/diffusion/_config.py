"""The noise schedule of a diffusion model: a pydantic config and its diffusers scheduler.

The config is what a trained network depends on (number of training
timesteps, beta schedule, what the network predicts), so it is saved beside
the weights, in diffusers' own ``scheduler_config.json`` format: the
directory can be opened with ``diffusers.DDIMScheduler.from_pretrained``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vemrestore.errors import UserInputError

if TYPE_CHECKING:
    from diffusers import DDIMScheduler

__all__ = [
    "SCHEDULER_CONFIG_NAME",
    "DiffusionConfig",
    "load_scheduler_config",
    "make_scheduler",
    "save_scheduler_config",
]

SCHEDULER_CONFIG_NAME = "scheduler_config.json"
_SCHEDULER_CLASS = "DDIMScheduler"
# Options of DDIMScheduler that this package fixes; a saved file must agree.
_FIXED = {
    "trained_betas": None,
    "set_alpha_to_one": True,
    "steps_offset": 0,
    "thresholding": False,
}


class DiffusionConfig(BaseModel):
    """Noise schedule and parameterisation of a diffusion model.

    Attributes
    ----------
    num_train_timesteps : int
        Number ``T`` of noise levels the network is trained on (timesteps ``0 .. T-1``).
    beta_schedule : {"linear", "scaled_linear", "squaredcos_cap_v2"}
        How the per-step noise variances grow; ``squaredcos_cap_v2`` is the
        cosine schedule of Nichol & Dhariwal (2021).
    beta_start, beta_end : float
        First and last beta of the linear schedules (unused by the cosine one).
    prediction_type : {"epsilon", "sample", "v_prediction"}
        What the network predicts: the noise, the clean sample ``x0``, or the
        velocity ``v = sqrt(a) eps - sqrt(1 - a) x0``. ``v_prediction`` and
        ``sample`` stay well-conditioned at the noisiest step, which matters
        for few-step sampling.
    timestep_spacing : {"trailing", "leading", "linspace"}
        How ``set_timesteps(n)`` picks ``n`` of the ``T`` levels; ``trailing``
        starts at ``T - 1`` (Lin et al. 2024), best for few steps.
    clip_sample : bool
        Clip the predicted ``x0`` to ``[-clip_sample_range, clip_sample_range]``.
    clip_sample_range : float
        Bound used by ``clip_sample``.
    rescale_betas_zero_snr : bool
        Rescale the schedule so the last level is pure noise (zero SNR);
        needs a prediction type other than ``epsilon``.

    References
    ----------
    Song, J., Meng, C. & Ermon, S. Denoising diffusion implicit models. ICLR (2021).
    :doi:`10.48550/arXiv.2010.02502`
    Lin, S., Liu, B., Li, J. & Yang, X. Common diffusion noise schedules and
    sample steps are flawed. WACV (2024). :doi:`10.48550/arXiv.2305.08891`

    Examples
    --------
    >>> config = DiffusionConfig(num_train_timesteps=100, prediction_type="epsilon")
    >>> make_scheduler(config).config.num_train_timesteps
    100
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    num_train_timesteps: int = Field(1000, ge=2, le=100_000)
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    beta_start: float = Field(1e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    prediction_type: Literal["epsilon", "sample", "v_prediction"] = "v_prediction"
    timestep_spacing: Literal["trailing", "leading", "linspace"] = "trailing"
    clip_sample: bool = False
    clip_sample_range: float = Field(1.0, gt=0.0)
    rescale_betas_zero_snr: bool = False

    @model_validator(mode="after")
    def _check(self) -> DiffusionConfig:
        if self.beta_end <= self.beta_start:
            raise ValueError(
                f"beta_end={self.beta_end} must exceed beta_start={self.beta_start} "
                "(swap them or pick a larger beta_end)"
            )
        if self.rescale_betas_zero_snr and self.prediction_type == "epsilon":
            raise ValueError(
                "rescale_betas_zero_snr=True cannot be used with prediction_type='epsilon' "
                "(x0 is undefined from the noise at zero SNR; use 'v_prediction')"
            )
        return self


def make_scheduler(config: DiffusionConfig) -> DDIMScheduler:
    """A fresh ``diffusers.DDIMScheduler`` for ``config`` (call ``set_timesteps`` before ``step``).

    Parameters
    ----------
    config : DiffusionConfig

    Returns
    -------
    diffusers.DDIMScheduler
        With the final step going to the clean sample (``set_alpha_to_one``).
    """
    from diffusers import DDIMScheduler

    return DDIMScheduler(**config.model_dump(), **_FIXED)


def save_scheduler_config(config: DiffusionConfig, directory: Path) -> Path:
    """Write ``scheduler_config.json`` (diffusers format) into ``directory``.

    Parameters
    ----------
    config : DiffusionConfig
    directory : pathlib.Path
        Created if needed; typically the folder holding the model weights.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    make_scheduler(config).save_config(directory)
    return directory / SCHEDULER_CONFIG_NAME


def load_scheduler_config(directory: Path) -> DiffusionConfig:
    """Read the config written by ``save_scheduler_config``.

    Parameters
    ----------
    directory : pathlib.Path
        Folder holding ``scheduler_config.json``.

    Returns
    -------
    DiffusionConfig

    Raises
    ------
    UserInputError
        If the file is missing, is not JSON, describes another scheduler class,
        or sets an option this package does not support.
    pydantic.ValidationError
        If a field is out of range.
    """
    path = Path(directory) / SCHEDULER_CONFIG_NAME
    if not path.is_file():
        raise UserInputError(
            f"{path} does not exist (pass the folder written by save_scheduler_config)"
        )
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserInputError(f"{path} is not valid JSON ({exc}); save the scheduler again") from exc
    if data.get("_class_name") != _SCHEDULER_CLASS:
        raise UserInputError(
            f"{path} describes a {data.get('_class_name')!r}, expected {_SCHEDULER_CLASS!r} "
            "(save the config with save_scheduler_config)"
        )
    for key, value in _FIXED.items():
        if data.get(key, value) != value:
            raise UserInputError(
                f"{path} sets {key}={data[key]!r}; only {key}={value!r} is supported "
                "(save the config with save_scheduler_config)"
            )
    fields = DiffusionConfig.model_fields
    return DiffusionConfig.model_validate({k: v for k, v in data.items() if k in fields})
