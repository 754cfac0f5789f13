"""SkelEM: a frozen regression skeleton plus a few-step diffusion refiner ("skelem").

Regression (the ``skeleton`` method) recovers the structure of an axially
undersampled stack but blurs fine detail; a diffusion model sampled from
pure noise restores texture but invents structure and is slow. SkelEM
decouples the two:

1. The skeleton is trained first, with its own pixel loss, on the volume's XY
   sections (or loaded from a saved skeleton), and then frozen.
2. A conditional diffusion U-Net (the refiner) learns the high-frequency
   residual ``sharp - skeleton`` on the same self-supervised XY pairs (rows
   sectioned by the axial forward model, cubic-upsampled back), conditioned on
   the skeleton output and the cubic input. Its diffusion loss never reaches
   the skeleton (the skeleton's weights are not in its optimiser, and its
   outputs are computed once, without gradients).
3. At prediction the residual of each XZ and YZ plane is sampled by a
   truncated reverse diffusion: it starts at ``t0 ~ strength * T`` from the
   noised skeleton estimate (a zero residual) and runs ``num_steps`` (default
   4) DDIM steps. ``mode="full"`` samples from pure noise instead, for
   comparison.
4. Cycle consistency on the real input: the refiner is copied into an XZ and
   a YZ refiner, fine-tuned on crops of the real (cubic-upsampled) volume so
   that the fused restoration, re-sectioned along z by the same forward model,
   reproduces the observed sections (data consistency) and the XZ and YZ
   restorations agree (cross-plane consistency); an anchor term keeps both
   close to the synthetically trained refiner. The restoration is the
   differentiable one-step ``x0`` estimate at ``t0`` (the first step of the
   truncated sampler), so a fine-tuning step costs one network call per plane.
5. ``num_samples`` samples with different seeds give the mean and a per-voxel
   standard deviation; the data-consistency residual (observed sections minus
   the re-sectioned mean, spread back over the fine slices) shows where the
   restoration disagrees with the measurement. ``output`` selects which of the
   three ``predict_block`` returns (``with_output`` gives the variants).
   Optionally (``consistency_projection``, on by default) that residual is
   added to the result: the orthogonal projection onto the volumes that
   reproduce the observation exactly, which never increases the L2 distance
   to any such volume (the truth among them when the sections are noise-free).

Sampling noise is a hash of the seed, sample index, plane orientation and
absolute voxel coordinates, so blockwise and whole-volume predictions agree.

References
----------
Weigert, M. et al. Isotropic reconstruction of 3D fluorescence microscopy
images using convolutional neural networks. MICCAI (2017).
:doi:`10.1007/978-3-319-66179-7_15`
Meng, C. et al. SDEdit: guided image synthesis and editing with stochastic
differential equations. ICLR (2022). :doi:`10.48550/arXiv.2108.01073`
Song, J., Meng, C. & Ermon, S. Denoising diffusion implicit models. ICLR (2021).
:doi:`10.48550/arXiv.2010.02502`
"""

from __future__ import annotations

import copy
import json
import math
import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from vemrestore.degrade._axial import sectioning_matrix
from vemrestore.diffusion import (
    DiffusionConfig,
    diffusion_target,
    load_scheduler_config,
    make_scheduler,
    predicted_original_sample,
    sample,
    sampling_timesteps,
    save_scheduler_config,
)
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import BlockRequest, MethodConfig, register_method
from vemrestore.methods._persist import (
    cpu_state,
    load_method,
    load_weights,
    require_files,
    save_trained,
    train_record,
    weights_digest,
)
from vemrestore.methods.interpolate import fine_to_section_coords, upsample_axial
from vemrestore.methods.skeleton import (
    PairSampler,
    Skeleton,
    SkeletonConfig,
    context_range,
    split_sections,
)
from vemrestore.models.cond_unet import ConditionalUNet2D
from vemrestore.models.unet2d import pad_to_multiple
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig, TrainResult, fit_model, resolve_device

__all__ = [
    "CycleConfig",
    "SkelEM",
    "SkelEMConfig",
    "consistency_correction",
    "keyed_normal",
]

Orientation = Literal["xz", "yz"]
Output = Literal["mean", "std", "consistency_residual"]
ORIENTATIONS: tuple[Orientation, Orientation] = ("xz", "yz")
_ORIENTATION_KEY = {"xz": 0, "yz": 1}
# Validation patches of the refiner, in multiples of the batch size.
_VALIDATION_BATCHES = 4
# Options that change how a trained SkelEM predicts, not what it learnt.
_INFERENCE_OPTIONS = frozenset(
    {
        "mode",
        "num_steps",
        "strength",
        "num_samples",
        "sample_seed",
        "consistency_projection",
        "output",
        "halo_yx",
        "halo_sections",
        "planes_per_batch",
    }
)
# Smallest residual scale (normalised units), for volumes the skeleton fits exactly.
_MIN_RESIDUAL_SCALE = 1e-3


def _default_refiner_train() -> TrainConfig:
    return TrainConfig(learning_rate=5e-4, loss="l2")


def _default_cycle_train() -> TrainConfig:
    return TrainConfig(
        num_steps=100,
        batch_size=1,
        gpu_batch_multiplier=1,
        patch_size=32,
        learning_rate=1e-4,
        lr_schedule="constant",
        loss="l1",
        checkpoint_every=50,
        validate_every=50,
    )


class CycleConfig(BaseModel):
    """Cycle-consistency fine-tuning of the XZ and YZ refiners on the real volume.

    Attributes
    ----------
    crop_sections : int
        Observed sections per crop whose data consistency is scored; one more
        section each side gives the networks context.
    margin : int
        Lateral context in pixels each side of a crop (not scored).
    num_crops : int
        Crops drawn once (their frozen skeleton outputs are computed once);
        each step takes ``train.batch_size`` of them with fresh noise.
    consistency_weight : float
        Weight of the L1 distance between the re-sectioned fused restoration
        and the observed sections.
    cross_plane_weight : float
        Weight of the L1 distance between the XZ and YZ restorations.
    anchor_weight : float
        Weight of the L1 distance of each restoration to that of the
        synthetically trained refiner (same noise): keeps the refiners close
        to what they learnt.
    train : TrainConfig
        Loop options; ``patch_size`` is the crop side in pixels (without
        margin), ``batch_size`` the crops per step.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    crop_sections: int = Field(4, ge=1, le=256)
    margin: int = Field(8, ge=0, le=256)
    num_crops: int = Field(8, ge=1, le=4096)
    consistency_weight: float = Field(1.0, ge=0.0)
    cross_plane_weight: float = Field(1.0, ge=0.0)
    anchor_weight: float = Field(1.0, ge=0.0)
    train: TrainConfig = Field(default_factory=_default_cycle_train)


class SkelEMConfig(MethodConfig):
    """Options of the SkelEM method.

    Attributes
    ----------
    profile : {"box", "gaussian"}
        Slice profile of the axial forward model (training pairs, data
        consistency); the skeleton uses the same.
    skeleton : SkeletonConfig, optional
        The skeleton to train first; default ``SkeletonConfig`` at this
        ``scale_factor`` and ``profile`` (given as a mapping, those two are
        filled in; they must match).
    skeleton_path : pathlib.Path, optional
        Directory of a trained skeleton (``Skeleton.save``); ``fit`` loads it
        instead of training one. Exclusive with ``skeleton``.
    base_channels, depth : int
        Refiner U-Net width and number of down-samplings.
    diffusion : DiffusionConfig
        Noise schedule and prediction target (``epsilon``, ``sample`` = x0,
        ``v_prediction``) of the refiner.
    mode : {"truncated", "full"}
        ``truncated``: start from the noised skeleton estimate at ``t0``;
        ``full``: sample the residual from pure noise (comparison mode).
    num_steps : int
        Refiner network calls per plane and sample (default 4; e.g. 50 for ``full``).
    strength : float
        ``t0 / T`` of the truncated start (see ``vemrestore.diffusion.sample``).
        ``num_steps`` and ``strength`` also set ``t0`` for training (the
        truncated range of timesteps, the cycle fine-tuning start); changed
        after training (``with_options``) they still work, off that focus.
    num_samples : int
        Samples (seeds) averaged; more than one gives the standard deviation.
    sample_seed : int
        Seed of the sampling noise; the same seed gives the same output.
    consistency_projection : bool
        Add the data-consistency residual to the result, so that it
        re-sections exactly onto the observation.
    output : {"mean", "std", "consistency_residual"}
        What ``predict_block`` returns: the restoration, the per-voxel
        standard deviation over the samples, or the data-consistency residual
        of the unprojected mean (all in input intensity units).
    halo_yx : int
        Network context in fine voxels each side of an output region along
        y, x and the upsampled z (skeleton and refiner together).
    halo_sections : int
        Extra sections each side so the cubic spline is exact where read.
    planes_per_batch : int
        Planes per network call at prediction time.
    train : TrainConfig
        Refiner training options (``loss`` is ignored: the diffusion loss is
        a mean squared error).
    pool_size : int
        Training pairs made once with the frozen skeleton; batches draw from
        them with random flips, noise and timesteps.
    truncated_fraction : float
        Fraction of training timesteps drawn from ``[0, t0]`` (the truncated
        range); the rest are uniform over all ``T`` levels (the full mode).
    cycle : CycleConfig, optional
        Cycle-consistency fine-tuning on the real volume; None skips it.
    """

    method: Literal["skelem"] = "skelem"
    profile: Literal["box", "gaussian"] = "box"
    skeleton: SkeletonConfig | None = None
    skeleton_path: Path | None = None
    base_channels: int = Field(32, ge=1, le=512)
    depth: int = Field(3, ge=0, le=6)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    mode: Literal["truncated", "full"] = "truncated"
    num_steps: int = Field(4, ge=1, le=100_000)
    strength: float = Field(0.3, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1, le=1024)
    sample_seed: int = Field(0, ge=0, le=2**63 - 1)
    consistency_projection: bool = True
    output: Output = "mean"
    halo_yx: int = Field(48, ge=0, le=4096)
    halo_sections: int = Field(8, ge=0, le=256)
    planes_per_batch: int = Field(8, ge=1, le=4096)
    train: TrainConfig = Field(default_factory=_default_refiner_train)
    pool_size: int = Field(2048, ge=1, le=1_000_000)
    truncated_fraction: float = Field(0.5, ge=0.0, le=1.0)
    cycle: CycleConfig | None = Field(default_factory=CycleConfig)

    @model_validator(mode="before")
    @classmethod
    def _fill_skeleton(cls, data: Any) -> Any:
        # A skeleton given as a mapping inherits the factor and profile it leaves out.
        if isinstance(data, dict) and isinstance(data.get("skeleton"), dict):
            skeleton = dict(data["skeleton"])
            if "scale_factor" in data:
                skeleton.setdefault("scale_factor", data["scale_factor"])
            skeleton.setdefault("profile", data.get("profile", "box"))
            data = {**data, "skeleton": skeleton}
        return data

    @model_validator(mode="after")
    def _check(self) -> SkelEMConfig:
        if self.skeleton is not None:
            if self.skeleton_path is not None:
                raise ValueError(
                    "give skeleton (options of a skeleton to train) or skeleton_path (a trained "
                    "one), not both"
                )
            if self.skeleton.scale_factor != self.scale_factor:
                raise ValueError(
                    f"skeleton.scale_factor={self.skeleton.scale_factor:g} differs from "
                    f"scale_factor={self.scale_factor:g} (set both alike, or leave "
                    "skeleton.scale_factor out)"
                )
            if self.skeleton.profile != self.profile:
                raise ValueError(
                    f"skeleton.profile={self.skeleton.profile!r} differs from "
                    f"profile={self.profile!r} (set both alike, or leave skeleton.profile out)"
                )
        multiple = 2**self.depth
        if self.train.patch_size % multiple:
            raise ValueError(
                f"train.patch_size={self.train.patch_size} must be a multiple of "
                f"2**depth={multiple} (change patch_size or depth)"
            )
        steps = self.num_steps if self.mode == "full" else round(self.num_steps / self.strength)
        if steps > self.diffusion.num_train_timesteps:
            raise ValueError(
                f"num_steps={self.num_steps} at strength={self.strength:g} needs {steps} of the "
                f"diffusion.num_train_timesteps={self.diffusion.num_train_timesteps} levels "
                "(lower num_steps or raise strength)"
            )
        return self

    def skeleton_config(self) -> SkeletonConfig:
        """The skeleton to train: ``skeleton``, or the default one at this factor and profile."""
        if self.skeleton is not None:
            return self.skeleton
        return SkeletonConfig(scale_factor=self.scale_factor, profile=self.profile)


# -- noise, consistency ------------------------------------------------------


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014) on uint64 arrays, wrapping."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_normal(
    seed: int,
    sample_index: int,
    orientation: int,
    planes: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """Standard normal noise that is a fixed function of its key and position.

    A counter-based generator: each value hashes (splitmix64) the seed, the
    sample index, the orientation and the absolute coordinates of its voxel,
    so any block of a volume draws exactly the noise the whole volume would.

    Parameters
    ----------
    seed, sample_index, orientation : int
        Non-negative keys.
    planes, rows, cols : numpy.ndarray of int, shapes (P,), (H,), (W,)
        Absolute, non-negative coordinates of the planes and their pixels.

    Returns
    -------
    numpy.ndarray of float32, shape (P, 1, H, W)

    Examples
    --------
    >>> a = keyed_normal(0, 0, 0, np.arange(4), np.arange(8), np.arange(8))
    >>> b = keyed_normal(0, 0, 0, np.arange(2, 4), np.arange(3, 8), np.arange(8))
    >>> bool(np.array_equal(a[2:, :, 3:], b)), a.shape
    (True, (4, 1, 8, 8))
    """
    with np.errstate(over="ignore"):
        key = np.array([seed, sample_index, orientation], dtype=np.uint64)
        h = _splitmix64(key[:1])
        for part in key[1:]:
            h = _splitmix64(h ^ part)
        h = _splitmix64(h ^ np.asarray(planes, dtype=np.uint64)[:, None, None])
        h = _splitmix64(h ^ np.asarray(rows, dtype=np.uint64)[None, :, None])
        h = _splitmix64(h ^ np.asarray(cols, dtype=np.uint64)[None, None, :])
        g = _splitmix64(h)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u2 = (g >> np.uint64(11)).astype(np.float64) * 2.0**-53
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return normal.astype(np.float32)[:, None]


def _local_sectioning(
    scale_factor: float,
    profile: str,
    *,
    fine_start: int,
    fine_stop: int,
    section_start: int,
    num_sections: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the forward model for sections lying wholly inside a fine window.

    Returns the matrix (S, fine_stop - fine_start) over the window's slices
    and the indices (S,), relative to ``section_start``, of those sections.
    Gaussian rows are taken from a matrix extended past the window, so a row
    cut by the window's end is never mistaken for a complete one.
    """
    pad = math.ceil(scale_factor) + (
        math.ceil(2 * scale_factor) + 1 if profile == "gaussian" else 0
    )
    total = max(round((section_start + num_sections) * scale_factor) + pad, fine_stop)
    weights = sectioning_matrix(total, scale_factor, profile=profile)  # type: ignore[arg-type]
    rows = weights[section_start : section_start + num_sections]
    outside = rows[:, :fine_start].sum(axis=1) + rows[:, fine_stop:].sum(axis=1)
    inside = np.flatnonzero(outside == 0)
    return rows[inside, fine_start:fine_stop], inside


def consistency_correction(
    estimate: np.ndarray, observed: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Smallest change along axis 0 that makes ``weights @ estimate`` equal ``observed``.

    ``W^T (W W^T)^{-1} (observed - W estimate)``: the orthogonal projection
    onto the volumes consistent with the observation. For a box profile with
    an integer factor it adds each section's residual to its own slices.

    Parameters
    ----------
    estimate : numpy.ndarray, shape (F, ...)
        Fine slices.
    observed : numpy.ndarray, shape (S, ...)
        Observed sections.
    weights : numpy.ndarray, shape (S, F)
        Forward model rows (each section's weights over the fine slices).

    Returns
    -------
    numpy.ndarray of float32, shape (F, ...)

    Examples
    --------
    >>> from vemrestore.degrade import sectioning_matrix
    >>> w = sectioning_matrix(8, 4)
    >>> fix = consistency_correction(np.zeros((8, 1)), np.array([[1.0], [2.0]]), w)
    >>> fix[:, 0].tolist()
    [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    """
    num, rest = estimate.shape[0], estimate.shape[1:]
    if weights.shape[0] == 0:
        return np.zeros_like(estimate, dtype=np.float32)
    flat = estimate.reshape(num, -1).astype(np.float64)
    residual = observed.reshape(weights.shape[0], -1) - weights @ flat
    multipliers = np.linalg.solve(weights @ weights.T, residual)
    return (weights.T @ multipliers).astype(np.float32).reshape(num, *rest)


class _Moments:
    """Running mean and standard deviation (Welford) of equally shaped arrays."""

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.astype(np.float64), np.zeros(x.shape)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)  # type: ignore[operator]

    def std(self) -> np.ndarray:
        """Sample standard deviation (ddof 1); zeros for a single sample."""
        if self.count < 2:
            return np.zeros_like(self.mean, dtype=np.float32)
        return np.sqrt(self.m2 / (self.count - 1)).astype(np.float32)  # type: ignore[operator]


# -- training ----------------------------------------------------------------


class _PackedDenoiser(nn.Module):
    """The refiner seen by ``fit_model``: one input tensor ``[x_t, cond..., t]``.

    The last channel holds the timestep (constant over the patch).
    """

    def __init__(self, refiner: ConditionalUNet2D) -> None:
        super().__init__()
        self.refiner = refiner

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        timesteps = packed[:, -1, 0, 0].round().long()
        return self.refiner(packed[:, :1], timesteps, packed[:, 1:-1])


class _RefinerPairs:
    """Noised residual batches from a pool of (conditioning, residual) patches."""

    def __init__(
        self,
        cond: np.ndarray,
        residual: np.ndarray,
        *,
        scheduler: Any,
        truncated_start: int,
        truncated_fraction: float,
    ) -> None:
        self.cond = cond
        self.residual = residual
        self.scheduler = scheduler
        self.truncated_start = truncated_start
        self.truncated_fraction = truncated_fraction

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


def _skeleton_pairs(
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
    sampler = PairSampler(
        sections,
        section_ids,
        scale_factor=cfg.scale_factor,
        profile=cfg.profile,
        patch_size=patch_size,
        context_planes=cfg.context_planes,
    )
    inputs, targets = sampler.draw(rng, num)
    model, device = skeleton._inference_model()
    centre = cfg.context_planes
    skeleton_residual = np.empty_like(targets)
    step = 32
    for start in range(0, num, step):
        x = torch.from_numpy(inputs[start : start + step]).to(device)
        with torch.inference_mode():
            out = model(pad_to_multiple(x, model.size_multiple))[..., :patch_size, :patch_size]
        skeleton_residual[start : start + step] = out.float().cpu().numpy()
    cubic = inputs[:, centre : centre + 1]
    cond = np.concatenate([cubic + skeleton_residual, cubic], axis=1)
    return cond, targets - skeleton_residual


# -- refinement --------------------------------------------------------------


def _sample_residual(
    refiner: ConditionalUNet2D,
    cond: torch.Tensor,
    noise: torch.Tensor,
    *,
    diffusion: DiffusionConfig,
    mode: str,
    num_steps: int,
    strength: float,
    amp: bool,
) -> torch.Tensor:
    """Normalised residual (N, 1, H, W) sampled with ``num_steps`` refiner calls."""
    scheduler = make_scheduler(diffusion)  # one per call: set_timesteps mutates it
    device = cond.device

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            return refiner(x, t, cond)

    def fixed_noise(k: int, shape: tuple[int, ...]) -> torch.Tensor:
        if k != 0:
            raise RuntimeError("the refiner draws only the starting noise")
        return noise

    if mode == "full":
        return sample(
            denoise,
            scheduler=scheduler,
            num_steps=num_steps,
            shape=noise.shape,
            noise_fn=fixed_noise,
            device=device,
        )
    return sample(
        denoise,
        scheduler=scheduler,
        num_steps=num_steps,
        init=torch.zeros_like(noise),
        strength=strength,
        noise_fn=fixed_noise,
    )


class _CycleObjective(nn.Module):
    """XZ and YZ restorations of crops: skeleton + one-step ``x0`` of each refiner at ``t0``.

    Input (B, 5, F, L, L): cubic, skeleton XZ, skeleton YZ, noise XZ, noise YZ
    (z, y, x); output (B, 2, F, L, L): the XZ and YZ restorations.
    """

    def __init__(
        self,
        refiners: dict[str, ConditionalUNet2D],
        *,
        diffusion: DiffusionConfig,
        start: int,
        residual_scale: float,
    ) -> None:
        super().__init__()
        self.refiners = nn.ModuleDict(refiners)
        self.scheduler = make_scheduler(diffusion)
        self.start = start
        self.residual_scale = residual_scale

    def _restore(
        self, name: str, cubic: torch.Tensor, skeleton: torch.Tensor, noise: torch.Tensor
    ) -> torch.Tensor:
        # cubic etc. (B, F, P, W): planes along P, pixels (F, W).
        b, f, p, w = cubic.shape
        refiner = self.refiners[name]

        def planes(x: torch.Tensor) -> torch.Tensor:
            return x.permute(0, 2, 1, 3).reshape(b * p, 1, f, w)

        cond = pad_to_multiple(
            torch.cat([planes(skeleton), planes(cubic)], dim=1), refiner.size_multiple
        )
        eps = pad_to_multiple(planes(noise), refiner.size_multiple)
        t = torch.full((b * p,), self.start, dtype=torch.long, device=cubic.device)
        noisy = self.scheduler.add_noise(torch.zeros_like(eps), eps, t)
        x0 = predicted_original_sample(self.scheduler, refiner(noisy, t, cond), noisy, t)
        residual = x0[:, 0, :f, :w].reshape(b, p, f, w).permute(0, 2, 1, 3)
        return skeleton + self.residual_scale * residual

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        cubic, skel_xz, skel_yz, noise_xz, noise_yz = packed.unbind(dim=1)
        xz = self._restore("xz", cubic, skel_xz, noise_xz)  # XZ planes: one per y
        yz = self._restore(
            "yz", *(v.transpose(2, 3) for v in (cubic, skel_yz, noise_yz))
        ).transpose(2, 3)  # YZ planes: one per x
        return torch.stack([xz, yz], dim=1)


class _CycleCrops:
    """Crops of the real volume with their frozen skeleton outputs, and the loss on them.

    Every crop spans ``crop_sections`` observed sections plus one each side
    (context) in a window of ``F`` fine slices, and ``patch_size + 2 margin``
    pixels laterally. The forward-model rows of each crop's scored sections
    are kept per crop (they differ for non-integer factors); the crop index
    travels in the last target channel so the loss can find them.
    """

    def __init__(
        self,
        skeleton: Skeleton,
        sections: np.ndarray,
        config: CycleConfig,
        *,
        profile: str,
        rng: np.random.Generator,
    ) -> None:
        k = skeleton.config.scale_factor
        num, height, width = sections.shape
        ns, margin, size = config.crop_sections, config.margin, config.train.patch_size
        side = size + 2 * margin
        if num < ns + 2 or min(height, width) < side:
            raise UserInputError(
                f"cycle consistency needs crops of {ns} + 2 sections and {side}x{side} pixels "
                f"(cycle.crop_sections={ns}, cycle.train.patch_size={size}, cycle.margin="
                f"{margin}), but the volume has shape {sections.shape} (lower them, or set "
                "cycle=None)"
            )
        self.config = config
        self.lateral = slice(margin, margin + size)
        fine = math.ceil((ns + 2) * k) + 2
        first = math.ceil(k)
        self.inner_z = slice(first, first + math.floor(ns * k))
        arrays: dict[str, list[np.ndarray]] = {
            "cubic": [],
            "xz": [],
            "yz": [],
            "observed": [],
            "weights": [],
        }
        for _ in range(config.num_crops):
            s0 = int(rng.integers(1, num - ns))
            y0, x0 = int(rng.integers(height - side + 1)), int(rng.integers(width - side + 1))
            f_lo = math.floor((s0 - 1) * k + 1e-9)
            cubic = upsample_axial(
                sections[:, y0 : y0 + side, x0 : x0 + side],
                k,
                kind="cubic",
                fine_start=f_lo,
                num_fine=fine,
            )
            arrays["cubic"].append(cubic)
            xz = skeleton.predict_planes(cubic.transpose(1, 0, 2), range(side))
            arrays["xz"].append(xz.transpose(1, 0, 2))
            yz = skeleton.predict_planes(cubic.transpose(2, 0, 1), range(side))
            arrays["yz"].append(yz.transpose(1, 2, 0))
            weights, inside = _local_sectioning(
                k,
                profile,
                fine_start=f_lo,
                fine_stop=f_lo + fine,
                section_start=s0,
                num_sections=ns,
            )
            padded_w = np.zeros((ns, fine), np.float32)
            padded_w[: len(inside)] = weights
            observed = np.zeros((ns, size, size), np.float32)
            observed[: len(inside)] = sections[
                s0 + inside, y0 + margin : y0 + margin + size, x0 + margin : x0 + margin + size
            ]
            arrays["weights"].append(padded_w)
            arrays["observed"].append(observed)
        self.cubic, self.skel_xz, self.skel_yz = (
            np.stack(arrays[name]) for name in ("cubic", "xz", "yz")
        )
        self.observed = np.stack(arrays["observed"])
        self.weights = torch.from_numpy(np.stack(arrays["weights"]))
        self.reference: _CycleObjective | None = None

    def pack(self, idx: np.ndarray, noise: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Network input (B, 5, F, L, L) and targets (B, 4, F, L, L).

        Targets: observed sections (first slices, inner pixels), the reference
        XZ and YZ restorations (anchor), and the crop index (constant).
        """
        inputs = np.stack(
            [self.cubic[idx], self.skel_xz[idx], self.skel_yz[idx], noise[:, 0], noise[:, 1]],
            axis=1,
        )
        packed = torch.from_numpy(inputs)
        targets = torch.zeros((len(idx), 4, *self.cubic.shape[1:]))
        lat, ns = self.lateral, self.observed.shape[1]
        targets[:, 0, :ns, lat, lat] = torch.from_numpy(self.observed[idx])
        if self.reference is not None:
            device = next(self.reference.parameters()).device
            with torch.no_grad():
                targets[:, 1:3] = self.reference(packed.to(device)).float().cpu()
        targets[:, 3] = torch.from_numpy(idx.astype(np.float32))[:, None, None, None]
        return packed, targets

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        idx = rng.integers(len(self.cubic), size=batch_size)
        noise = rng.standard_normal((batch_size, 2, *self.cubic.shape[1:]), dtype=np.float32)
        return self.pack(idx, noise)

    def terms(self, restored: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        """The three L1 terms: data consistency, cross-plane, anchor."""
        lat, inner = self.lateral, self.inner_z
        idx = targets[:, 3, 0, 0, 0].round().long().cpu()
        weights = self.weights[idx].to(restored.device)  # (B, S, F); zero rows unused
        valid = weights.sum(dim=2) > 0
        fused = restored.float().mean(dim=1)[:, :, lat, lat]
        resectioned = torch.einsum("bsf,bfyx->bsyx", weights, fused)
        observed = targets[:, 0, : weights.shape[1], lat, lat]
        error = (resectioned - observed).abs().mean(dim=(2, 3))
        region = restored[:, :, inner, lat, lat].float()
        return {
            "consistency": error[valid].mean(),
            "cross_plane": (region[:, 0] - region[:, 1]).abs().mean(),
            "anchor": (region - targets[:, 1:3, inner, lat, lat]).abs().mean(),
        }

    def loss(self, restored: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        terms = self.terms(restored, targets)
        cfg = self.config
        return (
            cfg.consistency_weight * terms["consistency"]
            + cfg.cross_plane_weight * terms["cross_plane"]
            + cfg.anchor_weight * terms["anchor"]
        )


# -- the method ----------------------------------------------------------------


@register_method("skelem", SkelEMConfig)
class SkelEM:
    """Frozen skeleton + few-step diffusion refiner for isotropic reconstruction.

    Parameters
    ----------
    config : SkelEMConfig

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.io._volume import Volume
    >>> from vemrestore.methods import create_method
    >>> tiny = {"num_steps": 2, "patch_size": 16, "batch_size": 2}
    >>> method = create_method(
    ...     "skelem", scale_factor=4, base_channels=4, depth=2, pool_size=4, train=tiny,
    ...     skeleton={"base_channels": 4, "depth": 2, "train": tiny},
    ...     cycle={"crop_sections": 2, "margin": 2, "num_crops": 1,
    ...            "train": {**tiny, "batch_size": 1}})
    >>> vol = Volume(np.random.default_rng(0).random((12, 32, 32), dtype=np.float32))
    >>> method = method.fit(vol, progress=False)
    >>> method.output_shape(vol.shape)
    (48, 32, 32)
    """

    name = "skelem"

    def __init__(self, config: SkelEMConfig) -> None:
        self.config = config
        self.skeleton: Skeleton | None = None
        self.refiners: dict[str, ConditionalUNet2D] | None = None
        self.residual_scale: float | None = None
        self.train_result: TrainResult | None = None
        self.cycle_result: TrainResult | None = None
        self.cycle_terms: list[dict[str, float]] = []
        self._lock = threading.Lock()
        self._device: torch.device | None = None

    # -- state ---------------------------------------------------------------

    def _build_refiner(self) -> ConditionalUNet2D:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.train.seed)
            return ConditionalUNet2D(
                1, 2, 1, base_channels=self.config.base_channels, depth=self.config.depth
            )

    def run_fingerprint(self) -> dict[str, str]:
        """Digest of skeleton and refiners: a blockwise run resumes only with the same networks."""
        skeleton, _, refiners = self._require_trained()
        return {"weights": weights_digest(skeleton.model, *refiners.values())}  # type: ignore[arg-type]

    def _require_trained(
        self,
    ) -> tuple[Skeleton, PercentileNormalization, dict[str, ConditionalUNet2D]]:
        if self.skeleton is None or self.refiners is None or self.residual_scale is None:
            raise UserInputError(
                "the skelem method is not trained (call fit(volume) or load_method(path) first)"
            )
        _, normalization = self.skeleton._require_trained()
        return self.skeleton, normalization, self.refiners

    def with_options(self, **options: Any) -> SkelEM:
        """The same trained networks with other inference options.

        Parameters
        ----------
        **options
            Any of ``mode``, ``num_steps``, ``strength``, ``num_samples``,
            ``sample_seed``, ``consistency_projection``, ``output``,
            ``halo_yx``, ``halo_sections``, ``planes_per_batch``; validated by
            ``SkelEMConfig``.

        Returns
        -------
        SkelEM
            Shares the networks (read-only) with ``self``; its config records
            the options, so a blockwise run of it is told apart from one of ``self``.

        Raises
        ------
        UserInputError
            If an option is a training option (retrain instead).
        """
        unknown = sorted(set(options) - _INFERENCE_OPTIONS)
        if unknown:
            raise UserInputError(
                f"with_options takes inference options only "
                f"({', '.join(sorted(_INFERENCE_OPTIONS))}), got {unknown} (change training "
                "options in the config and fit again)"
            )
        config = SkelEMConfig.model_validate({**self.config.model_dump(), **options})
        other = SkelEM(config)
        other.skeleton, other.refiners = self.skeleton, self.refiners
        other.residual_scale = self.residual_scale
        return other

    def with_output(self, output: Output) -> SkelEM:
        """``with_options(output=output)``: "mean", "std" or "consistency_residual"."""
        return self.with_options(output=output)

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dask.distributed: config, skeleton, refiner weights, scale.
        weights = None
        if self.refiners is not None:
            weights = cpu_state({name: net.state_dict() for name, net in self.refiners.items()})
        return {
            "config": self.config.model_dump(),
            "skeleton": self.skeleton,
            "weights": weights,
            "residual_scale": self.residual_scale,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(SkelEMConfig.model_validate(state["config"]))  # type: ignore[misc]
        self.skeleton = state["skeleton"]
        self.residual_scale = state["residual_scale"]
        if state["weights"] is not None:
            self.refiners = self._refiners_from(state["weights"])

    def _refiners_from(
        self, weights: dict[str, dict[str, torch.Tensor]]
    ) -> dict[str, ConditionalUNet2D]:
        refiners = {}
        for name in ORIENTATIONS:
            net = self._build_refiner()
            net.load_state_dict(weights[name])
            refiners[name] = net.eval()
        return refiners

    # -- training ------------------------------------------------------------

    def fit(
        self,
        volume: Volume,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> SkelEM:
        """Train (or load) the skeleton, freeze it, train the refiner, fine-tune it on the volume.

        Runs ``fit_refiner`` and then, unless ``config.cycle`` is None, ``fit_cycle``.

        Parameters
        ----------
        volume : Volume
            The anisotropic stack, shape (Z, Y, X) with Z sections of
            ``scale_factor`` fine slices each (loaded into memory).
        checkpoint_dir : pathlib.Path, optional
            Checkpoints go to its ``skeleton``, ``refiner`` and ``cycle`` subfolders.
        resume : bool
            Continue each stage from its checkpoint.
        progress : bool
            Show progress bars.

        Returns
        -------
        SkelEM
            ``self``, trained.

        Raises
        ------
        UserInputError
            If the volume is too small, or ``skeleton_path`` holds no matching skeleton.
        """
        options = {"checkpoint_dir": checkpoint_dir, "resume": resume, "progress": progress}
        self.fit_refiner(volume, **options)
        if self.config.cycle is not None:
            self.fit_cycle(volume, **options)
        return self

    def fit_refiner(
        self,
        volume: Volume,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> SkelEM:
        """Stages 1-2: the frozen skeleton, then the refiner on synthetic XY pairs.

        Both orientations start with the same refiner. ``train_result`` holds
        the refiner's diffusion loss (its validation loss on held-out sections).
        Parameters as in ``fit``; ``checkpoint_dir`` gets ``skeleton`` and
        ``refiner`` subfolders.
        """
        cfg = self.config
        skeleton = self._fit_skeleton(volume, _stage(checkpoint_dir, "skeleton"), resume, progress)
        skeleton.model.requires_grad_(False).eval()  # type: ignore[union-attr]
        sections = skeleton.normalization.apply(volume.to_numpy())  # type: ignore[union-attr]
        train_ids, val_ids = split_sections(volume.shape[0])
        scheduler = make_scheduler(cfg.diffusion)
        options = {"scheduler": scheduler, "truncated_start": self._truncated_start()}
        options["truncated_fraction"] = cfg.truncated_fraction
        cond, residual = _skeleton_pairs(
            skeleton,
            sections,
            train_ids,
            num=cfg.pool_size,
            patch_size=cfg.train.patch_size,
            rng=np.random.default_rng([cfg.train.seed, 3]),
        )
        scale = max(float(np.sqrt(np.mean(residual.astype(np.float64) ** 2))), _MIN_RESIDUAL_SCALE)
        sampler = _RefinerPairs(cond, residual / np.float32(scale), **options)
        val_rng = np.random.default_rng([cfg.train.seed, 4])
        num_val = _VALIDATION_BATCHES * cfg.train.batch_size
        val_cond, val_residual = _skeleton_pairs(
            skeleton, sections, val_ids, num=num_val, patch_size=cfg.train.patch_size, rng=val_rng
        )
        val_inputs, val_targets = _RefinerPairs(
            val_cond, val_residual / np.float32(scale), **options
        ).sample_batch(val_rng, num_val)

        def validate(model: nn.Module) -> float:
            device = next(model.parameters()).device
            return float(F.mse_loss(model(val_inputs.to(device)).float(), val_targets.to(device)))

        refiner = self._build_refiner()
        result = fit_model(
            _PackedDenoiser(refiner),
            sample_batch=sampler.sample_batch,
            loss_fn=F.mse_loss,
            config=cfg.train,
            checkpoint_dir=_stage(checkpoint_dir, "refiner"),
            resume=resume,
            validate=validate,
            progress=progress,
        )
        refiner.requires_grad_(False).eval()
        with self._lock:
            self.skeleton, self.residual_scale = skeleton, scale
            self.refiners = {"xz": refiner, "yz": copy.deepcopy(refiner)}
            self.train_result, self.cycle_result, self.cycle_terms = result, None, []
            self._device = None
        return self

    def fit_cycle(
        self,
        volume: Volume,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> SkelEM:
        """Stage 3: fine-tune the XZ and YZ refiners for cycle consistency on the real volume.

        Needs ``fit_refiner`` (or a loaded method) first and ``config.cycle``.
        ``cycle_result`` holds the loss; its ``val_losses`` start before
        fine-tuning (fixed crops and noise), and ``cycle_terms`` holds the
        data-consistency, cross-plane and anchor terms at each validation.
        Parameters as in ``fit``; ``checkpoint_dir`` gets a ``cycle`` subfolder.

        Raises
        ------
        UserInputError
            If the method is untrained, ``config.cycle`` is None, or the
            volume is smaller than a crop.
        """
        skeleton, normalization, refiners = self._require_trained()
        cfg = self.config
        if cfg.cycle is None:
            raise UserInputError(
                "config.cycle is None, so there is nothing to fine-tune (set cycle options, "
                "e.g. cycle={'train': {'num_steps': 100}})"
            )
        cycle = cfg.cycle
        sections = normalization.apply(volume.to_numpy())
        options = {
            "diffusion": cfg.diffusion,
            "start": self._truncated_start(),
            "residual_scale": self.residual_scale,
        }
        crops = _CycleCrops(
            skeleton,
            sections,
            cycle,
            profile=cfg.profile,
            rng=np.random.default_rng([cycle.train.seed, 5]),
        )
        device = resolve_device(cycle.train.device)
        if cycle.anchor_weight > 0:
            frozen = {name: copy.deepcopy(net) for name, net in refiners.items()}
            crops.reference = _CycleObjective(frozen, **options).to(device).eval()
        val_inputs, val_targets = crops.sample_batch(
            np.random.default_rng([cycle.train.seed, 6]), max(2, cycle.train.batch_size)
        )
        terms: list[dict[str, float]] = []

        def validate(model: nn.Module) -> float:
            dev = next(model.parameters()).device
            restored, targets = model(val_inputs.to(dev)), val_targets.to(dev)
            terms.append({name: float(v) for name, v in crops.terms(restored, targets).items()})
            return float(crops.loss(restored, targets))

        with self._lock:
            tuned = {
                name: copy.deepcopy(net).requires_grad_(True) for name, net in refiners.items()
            }
        result = fit_model(
            _CycleObjective(tuned, **options),
            sample_batch=crops.sample_batch,
            loss_fn=crops.loss,
            config=cycle.train,
            checkpoint_dir=_stage(checkpoint_dir, "cycle"),
            resume=resume,
            validate=validate,
            progress=progress,
        )
        for net in tuned.values():
            net.requires_grad_(False).eval()
        with self._lock:
            self.refiners, self.cycle_result, self.cycle_terms = tuned, result, terms
            self._device = None
        return self

    def _fit_skeleton(
        self, volume: Volume, checkpoint_dir: Path | None, resume: bool, progress: bool
    ) -> Skeleton:
        cfg = self.config
        if cfg.skeleton_path is None:
            skeleton = Skeleton(cfg.skeleton_config())
            return skeleton.fit(
                volume, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress
            )
        skeleton = _load_skeleton(cfg.skeleton_path)
        found = (skeleton.config.scale_factor, skeleton.config.profile)
        if found != (cfg.scale_factor, cfg.profile):
            raise UserInputError(
                f"skeleton_path={str(cfg.skeleton_path)!r} was trained for scale factor "
                f"{found[0]:g} and profile {found[1]!r}, this method has {cfg.scale_factor:g} "
                f"and {cfg.profile!r} (use a matching skeleton)"
            )
        return skeleton

    def _truncated_start(self) -> int:
        """``t0``: the first timestep of the truncated sampler (whatever ``mode`` is)."""
        cfg = self.config
        steps = sampling_timesteps(
            make_scheduler(cfg.diffusion), cfg.num_steps, strength=cfg.strength
        )
        return int(steps[0])

    # -- geometry ------------------------------------------------------------

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        z, y, x = input_shape
        return (round(z * self.config.scale_factor), y, x)

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        z, y, x = voxel_size
        return (z / self.config.scale_factor, y, x)

    def _multiple(self) -> int:
        """Pooling size both networks need the window aligned to (a power of two)."""
        skeleton_depth = (
            self.skeleton.config.depth
            if self.skeleton is not None
            else self.config.skeleton_config().depth
        )
        return 2 ** max(skeleton_depth, self.config.depth)

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        cfg = self.config
        halo, multiple = cfg.halo_yx, self._multiple()
        zs, ys, xs = output_region
        num, height, width = input_shape
        fine_lo = max(zs.start - halo, 0) // multiple * multiple
        fine_hi = min(zs.stop + halo, round(num * cfg.scale_factor))
        u = fine_to_section_coords(np.array([fine_lo, fine_hi - 1]), cfg.scale_factor)
        z_lo = max(0, math.floor(u[0]) - cfg.halo_sections)
        z_hi = min(num, math.ceil(u[1]) + 1 + cfg.halo_sections)

        def lateral(s: slice, size: int) -> slice:
            return slice(max(s.start - halo, 0) // multiple * multiple, min(size, s.stop + halo))

        return (slice(z_lo, z_hi), lateral(ys, height), lateral(xs, width))

    # -- prediction ----------------------------------------------------------

    def _inference_refiner(self, name: str) -> tuple[ConditionalUNet2D, torch.device]:
        _, _, refiners = self._require_trained()
        with self._lock:
            if self._device is None:
                self._device = resolve_device(self.config.train.device)
                if self._device.type == "cpu":
                    torch.set_flush_denormal(True)
                for net in refiners.values():
                    net.to(self._device).eval()
            return refiners[name], self._device

    def _refine(
        self,
        name: Orientation,
        cond: np.ndarray,
        *,
        planes: np.ndarray,
        rows: int,
        cols: int,
        sample_index: int,
    ) -> np.ndarray:
        """Sampled residuals (P, H, W) in normalised units for planes with ``cond`` (P, 2, H, W).

        ``planes``, ``rows`` and ``cols`` are the absolute plane indices and
        the absolute coordinates of pixel (0, 0), which key the noise.
        """
        cfg = self.config
        refiner, device = self._inference_refiner(name)
        num, _, height, width = cond.shape
        multiple = refiner.size_multiple
        padded_h, padded_w = -(-height // multiple) * multiple, -(-width // multiple) * multiple
        out = np.empty((num, height, width), np.float32)
        amp = self.config.train.amp and device.type == "cuda"
        for start in range(0, num, cfg.planes_per_batch):
            stop = min(start + cfg.planes_per_batch, num)
            c = pad_to_multiple(torch.from_numpy(cond[start:stop]).to(device), multiple)
            noise = keyed_normal(
                cfg.sample_seed,
                sample_index,
                _ORIENTATION_KEY[name],
                planes[start:stop],
                np.arange(rows, rows + padded_h),
                np.arange(cols, cols + padded_w),
            )
            with torch.inference_mode():
                residual = _sample_residual(
                    refiner,
                    c,
                    torch.from_numpy(noise).to(device),
                    diffusion=cfg.diffusion,
                    mode=cfg.mode,
                    num_steps=cfg.num_steps,
                    strength=cfg.strength,
                    amp=amp,
                )
            out[start:stop] = residual[:, 0, :height, :width].float().cpu().numpy()
        return out * np.float32(self.residual_scale)

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> np.ndarray:
        """Restore ``request.output_region`` (or its std / consistency map) from a block with halo.

        Parameters
        ----------
        block : numpy.ndarray, shape (Z, Y, X)
            Input sections starting at ``request.input_start``; should cover
            ``input_region(request.output_region, ...)``.
        request : BlockRequest

        Returns
        -------
        numpy.ndarray of float32, shape ``request.output_shape``
            ``config.output``: the restoration (mean over samples), the
            per-voxel standard deviation over samples, or the data-consistency
            residual of the unprojected mean; input intensity units.
        """
        skeleton, normalization, _ = self._require_trained()
        cfg = self.config
        k, halo, multiple = cfg.scale_factor, cfg.halo_yx, self._multiple()
        zs, ys, xs = request.output_region
        z0, y0, x0 = request.input_start
        num, height, width = block.shape
        y_lo, y_hi = context_range(ys, y0, y0 + height, halo, multiple)
        x_lo, x_hi = context_range(xs, x0, x0 + width, halo, multiple)
        fine_first = math.ceil(z0 * k - 1e-9)
        f_lo, f_hi = context_range(zs, fine_first, round((z0 + num) * k), halo, multiple)
        sections = normalization.apply(block[:, y_lo - y0 : y_hi - y0, x_lo - x0 : x_hi - x0])
        fine = upsample_axial(
            sections, k, kind="cubic", fine_start=f_lo, num_fine=f_hi - f_lo, section_start=z0
        )
        oy, ox = slice(ys.start - y_lo, ys.stop - y_lo), slice(xs.start - x_lo, xs.stop - x_lo)
        xz_stack = fine.transpose(1, 0, 2)  # XZ planes (one per y), pixels (z, x)
        yz_stack = fine.transpose(2, 0, 1)  # YZ planes (one per x), pixels (z, y)
        skel_xz = skeleton.predict_planes(xz_stack, range(oy.start, oy.stop))
        skel_yz = skeleton.predict_planes(yz_stack, range(ox.start, ox.stop))
        cond_xz = np.stack([skel_xz, xz_stack[oy]], axis=1)
        cond_yz = np.stack([skel_yz, yz_stack[ox]], axis=1)
        weights, inside = _local_sectioning(
            k, cfg.profile, fine_start=f_lo, fine_stop=f_hi, section_start=z0, num_sections=num
        )
        observed = sections[inside][:, oy, ox]
        restored, raw = _Moments(), _Moments()
        for index in range(cfg.num_samples):
            r_xz = self._refine(
                "xz",
                cond_xz,
                planes=np.arange(ys.start, ys.stop),
                rows=f_lo,
                cols=x_lo,
                sample_index=index,
            )
            r_yz = self._refine(
                "yz",
                cond_yz,
                planes=np.arange(xs.start, xs.stop),
                rows=f_lo,
                cols=y_lo,
                sample_index=index,
            )
            v_xz = (skel_xz + r_xz).transpose(1, 0, 2)[:, :, ox]
            v_yz = (skel_yz + r_yz).transpose(1, 2, 0)[:, oy, :]
            fused = 0.5 * (v_xz + v_yz)
            raw.add(fused)
            if cfg.consistency_projection:
                fused = fused + consistency_correction(fused, observed, weights)
            restored.add(fused)
        z_out = slice(zs.start - f_lo, zs.stop - f_lo)
        span = np.float32(normalization.high - normalization.low)
        if cfg.output == "std":
            return restored.std()[z_out] * span
        if cfg.output == "consistency_residual":
            correction = consistency_correction(raw.mean, observed, weights)  # type: ignore[arg-type]
            return correction[z_out] * span
        return normalization.invert(restored.mean[z_out])  # type: ignore[index]

    # -- persistence ---------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``weights.pt`` (both refiners' state_dicts), ``refiner.json``,
        ``scheduler_config.json`` (diffusers format) and the skeleton in ``skeleton/``.

        A ``training.json`` with the loss histories is added when the method
        was trained in this session.
        """
        skeleton, _, refiners = self._require_trained()
        training = None
        if self.train_result is not None:
            training = {"refiner": train_record(self.train_result)}
            if self.cycle_result is not None:
                training["cycle"] = train_record(self.cycle_result, terms=self.cycle_terms)
        weights = {name: net.state_dict() for name, net in refiners.items()}
        path = save_trained(path, self.config, weights, training=training)
        record = {"model": refiners["xz"].config, "residual_scale": self.residual_scale}
        (path / "refiner.json").write_text(json.dumps(record, indent=2))
        save_scheduler_config(self.config.diffusion, path)
        skeleton.save(path / "skeleton")

    def load_state(self, path: Path) -> None:
        """Restore the skeleton, refiners and scale written by ``save`` (see ``load_method``)."""
        path = Path(path)
        require_files(path, ("weights.pt", "refiner.json", "skeleton"), "SkelEM")
        if load_scheduler_config(path) != self.config.diffusion:
            raise UserInputError(
                f"{path / 'scheduler_config.json'} disagrees with the diffusion options in "
                f"{path / 'config.json'} (save the method again)"
            )
        weights = load_weights(path)
        try:
            refiners = self._refiners_from(weights)
        except (KeyError, RuntimeError, TypeError, AttributeError) as exc:
            raise UserInputError(
                f"{path / 'weights.pt'} does not hold this config's refiners ({exc}); "
                "save the method again"
            ) from exc
        skeleton = _load_skeleton(path / "skeleton")
        scale = float(json.loads((path / "refiner.json").read_text())["residual_scale"])
        with self._lock:
            self.skeleton, self.refiners, self.residual_scale = skeleton, refiners, scale
            self._device = None


def _stage(checkpoint_dir: Path | None, name: str) -> Path | None:
    """Checkpoint folder of one training stage (None without ``checkpoint_dir``)."""
    return None if checkpoint_dir is None else Path(checkpoint_dir) / name


def _load_skeleton(path: Path) -> Skeleton:
    """The trained skeleton saved in ``path`` (``Skeleton.save``)."""
    skeleton = load_method(path)
    if not isinstance(skeleton, Skeleton):
        raise UserInputError(
            f"{path} holds a {type(skeleton).__name__}, not a skeleton (pass a directory "
            "written by `vemrestore train skeleton`)"
        )
    return skeleton
