"""The diffusion refiner of SkelEM: its training pairs and the sampling of its residual."""

from __future__ import annotations

import math
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import KW_ONLY, dataclass
from typing import Any, Literal, NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.diffusion import (
    DiffusionConfig,
    diffusion_target,
    make_scheduler,
    sample,
    sampling_timesteps,
)
from vemrestore.errors import UserInputError
from vemrestore.methods.skelem.config import SkelEMConfig
from vemrestore.methods.skelem.noise import keyed_normal
from vemrestore.methods.skeleton import Skeleton
from vemrestore.models.cond_unet import ConditionalUNet2D
from vemrestore.models.unet2d import pad_to_multiple
from vemrestore.train import TrainResult, fixed_validation, holdout_sections

__all__ = [
    "DenoiserFit",
    "PackedDenoiser",
    "RefinerPairs",
    "ResidualSampling",
    "matched_strength",
    "refine_planes",
    "residual_scale",
    "skeleton_pairs",
    "train_refiner",
    "train_residual_denoiser",
    "truncated_start",
]

# Patches per skeleton call when the refiner's training pool is made.
_POOL_BATCH = 32
# Validation patches of the refiner, in multiples of the batch size.
_VALIDATION_BATCHES = 4
# Smallest residual scale (normalised units), for volumes the skeleton fits exactly.
_MIN_RESIDUAL_SCALE = 1e-3


class ResidualSampling(Protocol):
    """The sampling options ``refine_planes`` reads (``SkelEMInference`` has them)."""

    mode: Literal["truncated", "full"]
    num_inference_steps: int
    strength: float | None
    seed: int
    batch_size: int


def truncated_start(diffusion: DiffusionConfig, sampling: ResidualSampling) -> int:
    """``t0``: the first timestep of the truncated sampler of ``sampling`` (whatever its mode).

    It also sets the truncated range of training timesteps.
    """
    if sampling.strength is None:
        raise UserInputError(
            "inference.strength is chosen when the refiner is trained (matched to the "
            "skeleton's error); fit the method first, or give a strength in (0, 1]"
        )
    steps = sampling_timesteps(
        make_scheduler(diffusion), sampling.num_inference_steps, strength=sampling.strength
    )
    return int(steps[0])


def matched_strength(diffusion: DiffusionConfig, num_steps: int, error: float) -> float:
    """The truncation ``strength`` whose start ``t0`` has the noise level nearest ``error``.

    The truncated sampler starts from the skeleton's estimate (a zero
    residual) noised to ``t0``. At timestep ``t`` the noise of ``x_t``, in
    units of the clean sample, has standard deviation ``sigma_t = sqrt((1 -
    alpha_bar_t) / alpha_bar_t)``; where it equals the skeleton's RMS error
    (``error``, in the refiner's residual units), the noise covers what the
    skeleton got wrong without drowning what it got right (SDEdit's
    trade-off). SkelEM's units are the RMS of the training residuals, so its
    held-out error is close to 1 and the start close to a signal-to-noise
    ratio of 1; a skeleton that does worse on held-out sections starts noisier.

    Candidates are the strengths ``num_steps / n`` that ``sampling_timesteps``
    turns into the lowest ``num_steps`` steps of an ``n``-step schedule, for
    ``n`` from ``num_steps`` to ``num_train_timesteps``; the nearest in log
    sigma wins.

    Examples
    --------
    >>> from vemrestore.diffusion import DiffusionConfig
    >>> matched_strength(DiffusionConfig(), 4, 1.0)  # cosine schedule: t0 ~ T / 2
    0.5
    """
    if not error > 0:
        raise ValueError(f"error must be positive, got {error}")
    scheduler = make_scheduler(diffusion)
    alpha_bar = scheduler.alphas_cumprod.double()
    best, best_gap = 1.0, math.inf
    for n in range(num_steps, int(scheduler.config.num_train_timesteps) + 1):
        strength = num_steps / n
        t0 = int(sampling_timesteps(scheduler, num_steps, strength=strength)[0])
        sigma = math.sqrt((1 - alpha_bar[t0]) / alpha_bar[t0])
        gap = abs(math.log(sigma / error))
        if gap < best_gap:
            best, best_gap = strength, gap
        elif sigma < error:  # t0 only falls as n grows: past the match, done
            break
    return best


class DenoiserFit(NamedTuple):
    """What ``train_residual_denoiser`` gives.

    Attributes
    ----------
    scale : float
        RMS of the training residuals; the denoiser works in its units.
    error : float
        RMS of the held-out residuals in those units: the error of the
        estimate the denoiser refines, on sections it never trained on.
    result : TrainResult
        The diffusion loss (validation on the held-out residuals).
    """

    scale: float
    error: float
    result: TrainResult


class PackedDenoiser(nn.Module):
    """The refiner seen by ``fit_model``: one input tensor ``[x_t, cond..., t]``.

    The last channel holds the timestep (constant over the patch).
    """

    def __init__(self, refiner: ConditionalUNet2D) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        timesteps = packed[:, -1, 0, 0].round().long()
        return self.refiner(packed[:, :1], timesteps, packed[:, 1:-1])


@dataclass(eq=False)
class RefinerPairs:
    """Noised residual batches from a pool of (conditioning, residual) patches."""

    cond: np.ndarray
    residual: np.ndarray
    _: KW_ONLY
    scheduler: Any
    truncated_start: int
    truncated_fraction: float

    def pack(
        self, idx: np.ndarray, timesteps: np.ndarray, noise: np.ndarray, flips: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor]:
        cond, residual = self.cond[idx].copy(), self.residual[idx].copy()
        for axis, column in ((-2, 0), (-1, 1)):
            chosen = flips[:, column]
            cond[chosen] = np.flip(cond[chosen], axis)
            residual[chosen] = np.flip(residual[chosen], axis)
        x0, eps = torch.from_numpy(residual), torch.from_numpy(noise)
        t = torch.from_numpy(timesteps.astype(np.int64))
        noisy = self.scheduler.add_noise(x0, eps, t)
        target = diffusion_target(self.scheduler, x0, eps, t)
        t_channel = t.float()[:, None, None, None].expand_as(noisy)
        return torch.cat([noisy, torch.from_numpy(cond), t_channel], dim=1), target.float()

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(len(self.cond), size=batch_size)
        total = int(self.scheduler.config.num_train_timesteps)
        truncated = rng.random(batch_size) < self.truncated_fraction
        timesteps = np.where(
            truncated,
            rng.integers(self.truncated_start + 1, size=batch_size),
            rng.integers(total, size=batch_size),
        )
        noise = rng.standard_normal((batch_size, *self.residual.shape[1:]), dtype=np.float32)
        flips = rng.integers(2, size=(batch_size, 2)).astype(bool)
        return self.pack(idx, timesteps, noise, flips)


def skeleton_pairs(
    skeleton: Skeleton,
    sections: np.ndarray,
    section_ids: np.ndarray,
    *,
    num: int,
    patch_size: int,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(conditioning (N, 2, P, P), residual (N, 1, P, P)) from XY pairs and the frozen skeleton.

    Conditioning is [skeleton output, cubic input]; residual = sharp - skeleton output.
    """
    cfg = skeleton.config
    sampler = skeleton.pair_sampler(sections, section_ids, patch_size=patch_size)
    inputs, targets = sampler.draw(rng, num)
    device = skeleton.inference_device()
    model = skeleton.model
    assert model is not None  # inference_device() checked that the skeleton is trained
    centre = cfg.context_planes
    skeleton_residual = np.empty_like(targets)
    for start in range(0, num, _POOL_BATCH):
        x = torch.from_numpy(inputs[start : start + _POOL_BATCH]).to(device)
        with torch.inference_mode():
            out = model(pad_to_multiple(x, model.size_multiple))[..., :patch_size, :patch_size]
        skeleton_residual[start : start + _POOL_BATCH] = out.float().cpu().numpy()
    cubic = inputs[:, centre : centre + 1]
    cond = np.concatenate([cubic + skeleton_residual, cubic], axis=1)
    return cond, targets - skeleton_residual


def train_refiner(
    refiner: ConditionalUNet2D,
    skeleton: Skeleton,
    sections: np.ndarray,
    *,
    config: SkelEMConfig,
    truncated_start: int | Callable[[float], int],
    train: Callable[..., TrainResult],
) -> DenoiserFit:
    """Train ``refiner`` in place on what the frozen skeleton leaves of XY pairs.

    ``sections`` is the normalised stack; ``train(model, sampler, loss_fn,
    validate)`` trains (``TrainedMethod.train_network``); ``truncated_start``
    as in ``train_residual_denoiser``, which gives the result.
    """
    cfg = config

    def pool(ids: np.ndarray, num: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        return skeleton_pairs(
            skeleton, sections, ids, num=num, patch_size=cfg.train.patch_size, rng=rng
        )

    return train_residual_denoiser(
        refiner,
        pool,
        len(sections),
        diffusion=cfg.diffusion,
        pool_size=cfg.pool_size,
        truncated_start=truncated_start,
        truncated_fraction=cfg.truncated_fraction,
        seed=cfg.train.seed,
        batch_size=cfg.train.batch_size,
        train=train,
    )


def train_residual_denoiser(
    denoiser: ConditionalUNet2D,
    pool: Callable[[np.ndarray, int, np.random.Generator], tuple[np.ndarray, np.ndarray]],
    num_sections: int,
    *,
    diffusion: DiffusionConfig,
    pool_size: int,
    truncated_start: int | Callable[[float], int],
    truncated_fraction: float,
    seed: int,
    batch_size: int,
    train: Callable[..., TrainResult],
) -> DenoiserFit:
    """Train a conditional denoiser in place on a pool of (conditioning, residual) patches.

    ``pool(section_ids, num, rng)`` makes ``num`` patches from the given XY
    sections: the training pool from most sections, fixed validation patches
    from held-out ones (``holdout_sections``). The residuals are scaled to
    unit RMS. ``truncated_start`` is ``t0`` (the truncated range of training
    timesteps), or a function of the held-out error (``DenoiserFit.error``)
    that returns it. Training is ``train(model, sampler, loss_fn, validate)``,
    e.g. ``TrainedMethod.train_network``.
    """
    train_ids, val_ids = holdout_sections(num_sections)
    cond, residual = pool(train_ids, pool_size, np.random.default_rng([seed, 3]))
    scale = residual_scale(residual)
    val_rng = np.random.default_rng([seed, 4])
    num_val = _VALIDATION_BATCHES * batch_size
    val_cond, val_residual = pool(val_ids, num_val, val_rng)
    error = max(_rms(val_residual) / scale, _MIN_RESIDUAL_SCALE)
    options = {
        "scheduler": make_scheduler(diffusion),
        "truncated_start": truncated_start(error)
        if callable(truncated_start)
        else int(truncated_start),
        "truncated_fraction": truncated_fraction,
    }
    sampler = RefinerPairs(cond, residual / np.float32(scale), **options)
    val_batch = RefinerPairs(val_cond, val_residual / np.float32(scale), **options).sample_batch(
        val_rng, num_val
    )
    result = train(
        PackedDenoiser(denoiser), sampler, F.mse_loss, fixed_validation([val_batch], F.mse_loss)
    )
    denoiser.requires_grad_(False).eval()
    return DenoiserFit(scale, error, result)


def residual_scale(residual: np.ndarray) -> float:
    """The refiner's unit: the RMS of ``residual`` (at least ``_MIN_RESIDUAL_SCALE``)."""
    return max(_rms(residual), _MIN_RESIDUAL_SCALE)


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values.astype(np.float64) ** 2)))


def refine_planes(
    refiner: ConditionalUNet2D,
    cond: np.ndarray,
    *,
    sampling: ResidualSampling,
    diffusion: DiffusionConfig,
    key: tuple[int, int],
    origin: tuple[np.ndarray, int, int],
    device: torch.device,
    context: Callable[[], AbstractContextManager[Any]],
) -> np.ndarray:
    """Sampled residuals (P, H, W), in residual-scale units, of planes with ``cond`` (P, C, H, W).

    ``sampling`` sets the sampler and the planes per call, ``diffusion`` the
    schedule. The starting noise is keyed by ``sampling.seed``, ``key`` (sample
    index, orientation) and ``origin``: the absolute plane indices (P,) and
    the absolute row and column of pixel (0, 0). ``context()`` wraps every
    refiner call (e.g. autocast).
    """
    planes, rows, cols = origin
    num, _, height, width = cond.shape
    multiple = refiner.size_multiple
    padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
    out = np.empty((num, height, width), np.float32)
    for start in range(0, num, sampling.batch_size):
        stop = min(start + sampling.batch_size, num)
        c = pad_to_multiple(torch.from_numpy(cond[start:stop]).to(device), multiple)
        noise = keyed_normal(
            sampling.seed,
            *key,
            planes[start:stop],
            np.arange(rows, rows + padded_h),
            np.arange(cols, cols + padded_w),
        )

        def denoise(x: torch.Tensor, t: torch.Tensor, c: torch.Tensor = c) -> torch.Tensor:
            with context():
                return refiner(x, t, c)

        with torch.inference_mode():
            start_noise = torch.from_numpy(noise).to(device)
            residual = _sample_residual(denoise, start_noise, sampling, diffusion)
        out[start:stop] = residual[:, 0, :height, :width].float().cpu().numpy()
    return out


def _sample_residual(
    denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    noise: torch.Tensor,
    inference: ResidualSampling,
    diffusion: DiffusionConfig,
) -> torch.Tensor:
    """Residual (N, 1, H, W) sampled with ``num_inference_steps`` calls of ``denoise(x_t, t)``.

    ``noise`` (N, 1, H, W) is the starting noise, the only noise drawn.
    """
    scheduler = make_scheduler(diffusion)  # one per call: set_timesteps mutates it

    def fixed_noise(k: int, shape: tuple[int, ...]) -> torch.Tensor:
        if k != 0:
            raise RuntimeError("the refiner draws only the starting noise")
        return noise

    if inference.mode == "full":
        return sample(
            denoise,
            scheduler=scheduler,
            num_steps=inference.num_inference_steps,
            shape=noise.shape,
            noise_fn=fixed_noise,
            device=noise.device,
        )
    return sample(
        denoise,
        scheduler=scheduler,
        num_steps=inference.num_inference_steps,
        init=torch.zeros_like(noise),
        strength=inference.strength,
        noise_fn=fixed_noise,
    )
