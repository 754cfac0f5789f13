"""Training targets and loss for each prediction type, and the inverse map to ``x0``."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["diffusion_loss", "diffusion_target", "predicted_original_sample"]


def _alpha_bar(scheduler: Any, timesteps: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``alphas_cumprod[t]`` shaped (N, 1, 1, ...) to broadcast against ``like``."""
    values = scheduler.alphas_cumprod.to(like.device)[timesteps.to(like.device)]
    return values.to(like.dtype).reshape(-1, *([1] * (like.ndim - 1)))


def diffusion_target(
    scheduler: Any, sample: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """What the network must output for ``scheduler.add_noise(sample, noise, timesteps)``.

    Parameters
    ----------
    scheduler : diffusers.DDIMScheduler
        Its ``config.prediction_type`` picks the target.
    sample : torch.Tensor, shape (N, ...)
        Clean data ``x0``.
    noise : torch.Tensor, shape (N, ...)
        The standard normal noise that was added.
    timesteps : torch.Tensor of int64, shape (N,)

    Returns
    -------
    torch.Tensor, shape (N, ...)
        ``noise`` (``"epsilon"``), ``sample`` (``"sample"``), or the velocity
        from ``scheduler.get_velocity`` (``"v_prediction"``).
    """
    kind = scheduler.config.prediction_type
    if kind == "epsilon":
        return noise
    if kind == "sample":
        return sample
    if kind == "v_prediction":
        return scheduler.get_velocity(sample, noise, timesteps)
    raise ValueError(f"unknown prediction_type {kind!r}")


def predicted_original_sample(
    scheduler: Any, model_output: torch.Tensor, noisy: torch.Tensor, timesteps: torch.Tensor
) -> torch.Tensor:
    """The clean sample ``x0`` implied by a network output at ``noisy`` (x_t).

    Parameters
    ----------
    model_output : torch.Tensor, shape (N, ...)
        Noise, ``x0`` or velocity, as the scheduler's ``prediction_type`` says.
    noisy : torch.Tensor, shape (N, ...)
        The network input ``x_t``.
    scheduler, timesteps
        As in ``diffusion_target``.

    Returns
    -------
    torch.Tensor, shape (N, ...)
    """
    kind = scheduler.config.prediction_type
    a = _alpha_bar(scheduler, timesteps, noisy)
    if kind == "epsilon":
        return (noisy - (1 - a).sqrt() * model_output) / a.sqrt()
    if kind == "sample":
        return model_output
    if kind == "v_prediction":
        return a.sqrt() * noisy - (1 - a).sqrt() * model_output
    raise ValueError(f"unknown prediction_type {kind!r}")


def diffusion_loss(
    model_output: torch.Tensor,
    *,
    scheduler: Any,
    sample: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Mean squared error between ``model_output`` and the target of ``diffusion_target``.

    Parameters
    ----------
    model_output : torch.Tensor, shape (N, ...)
        The network's output for ``scheduler.add_noise(sample, noise, timesteps)``.
    scheduler : diffusers.DDIMScheduler
    sample, noise : torch.Tensor, shape (N, ...)
        Clean data and the added noise.
    timesteps : torch.Tensor of int64, shape (N,)
    weight : torch.Tensor, optional
        Non-negative per-pixel weights broadcastable to the output (e.g. a
        mask of the pixels to restore); the loss is the weighted mean.

    Returns
    -------
    torch.Tensor
        Scalar loss (float32).

    Examples
    --------
    >>> from vemrestore.diffusion import DiffusionConfig, make_scheduler
    >>> scheduler = make_scheduler(DiffusionConfig(prediction_type="epsilon"))
    >>> x0, eps, t = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4), torch.tensor([10, 500])
    >>> float(diffusion_loss(eps, scheduler=scheduler, sample=x0, noise=eps, timesteps=t))
    0.0
    """
    target = diffusion_target(scheduler, sample, noise, timesteps)
    error = (model_output.float() - target.float()).square()
    if weight is None:
        return error.mean()
    weight = torch.broadcast_to(weight.to(error.dtype), error.shape)
    return (error * weight).sum() / weight.sum().clamp_min(1e-12)
