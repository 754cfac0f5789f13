"""Options of SkelEM: the method, its inference and its cycle-consistency fine-tuning."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from vemrestore.diffusion import DiffusionConfig
from vemrestore.errors import UserInputError
from vemrestore.methods._base import AxialConfig
from vemrestore.methods._trained import SamplingConfig, TrainedConfig
from vemrestore.methods.skeleton import SkeletonConfig, check_patch_fits_unet
from vemrestore.train import TrainConfig

__all__ = [
    "STEP_BUDGET_SHARES",
    "CycleConfig",
    "SkelEMConfig",
    "SkelEMInference",
    "check_sampling_levels",
    "split_steps",
]

# The refiner's training: about 2 minutes on one CPU core (``REFINER_TRAIN``).
REFINER_TRAIN = {
    "num_steps": 1500,
    "batch_size": 8,
    "patch_size": 32,
    "learning_rate": 1e-3,
    "loss": "l2",
    "validate_every": 250,
}
# How a budget of training steps splits across SkelEM's stages (``with_step_budget``).
STEP_BUDGET_SHARES = {"skeleton": 0.5, "refiner": 0.4, "cycle": 0.1}


class SkelEMInference(SamplingConfig):
    """How a trained SkelEM predicts.

    Attributes
    ----------
    mode : {"truncated", "full"}
        ``truncated``: start from the noised skeleton estimate at ``t0``;
        ``full``: sample the residual from pure noise (comparison mode).
    num_inference_steps : int
        Refiner network calls per plane and sample (default 4; e.g. 50 for ``full``).
    strength : float or None
        ``t0 / T`` of the truncated start (see ``vemrestore.diffusion.sample``).
        None (the default): chosen when the refiner is trained, where the
        diffusion noise level matches the skeleton's RMS error on held-out
        sections in the refiner's units (``matched_strength``; those units
        are the RMS of the training residuals, so the match lands near a
        signal-to-noise ratio of 1, about 0.5 with the cosine schedule),
        and written into the trained config. ``num_inference_steps`` and
        ``strength`` also set ``t0`` for training (the truncated range of
        timesteps, the cycle fine-tuning start); changed after training
        (``with_inference``) they still work, off that focus.
    num_samples : int
        Samples (seeds) averaged; more than one adds the ``"std"`` output.
    seed : int
        Seed of the sampling noise; the same seed gives the same output.
    consistency_projection : bool
        Add the data-consistency residual to the result, so that it
        re-sections exactly onto the observation.
    halo : int
        Network context in fine voxels each side of an output region along
        y, x and the upsampled z (skeleton and refiner together).
    batch_size : int
        Planes per refiner call.
    """

    mode: Literal["truncated", "full"] = "truncated"
    strength: float | None = Field(None, gt=0.0, le=1.0)
    consistency_projection: bool = True
    halo: int = Field(48, ge=0, le=4096)


def check_sampling_levels(sampling: SamplingConfig, diffusion: DiffusionConfig) -> None:
    """Raise ``ValueError`` unless the sampler's steps fit the schedule's levels.

    ``sampling`` has ``mode`` ("full" or "truncated"), ``num_inference_steps``
    and ``strength``.
    """
    num, strength = sampling.num_inference_steps, sampling.strength
    # A strength matched at training needs at least the steps themselves.
    steps = num if sampling.mode == "full" or strength is None else round(num / strength)  # type: ignore[attr-defined]
    if steps > diffusion.num_train_timesteps:
        at = "" if strength is None else f" at inference.strength={strength:g}"
        raise ValueError(
            f"inference.num_inference_steps={num}{at} needs {steps} of the "
            f"diffusion.num_train_timesteps={diffusion.num_train_timesteps} levels (lower "
            "inference.num_inference_steps"
            + ("" if strength is None else " or raise inference.strength")
            + ")"
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
    train: TrainConfig = Field(
        default_factory=partial(
            TrainConfig,
            num_steps=100,
            batch_size=1,
            gpu_batch_multiplier=1,
            patch_size=32,
            learning_rate=1e-4,
            lr_schedule="constant",
            checkpoint_every=50,
            validate_every=50,
        )
    )


class SkelEMConfig(TrainedConfig, AxialConfig):
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
        Refiner U-Net width and number of down-samplings (16 and 2: minutes
        of training on a laptop CPU; with the earlier default, 32 and 3,
        training was several times slower and SkelEM, as with 16 and 2,
        scored within 0.05 dB of its own skeleton on medulla: README).
    diffusion : DiffusionConfig
        Noise schedule and prediction target (``epsilon``, ``sample`` = x0,
        ``v_prediction``) of the refiner.
    halo_sections : int
        Extra sections each side so the cubic spline is exact where read.
    train : TrainConfig
        Refiner training options (``loss`` is ignored: the diffusion loss is
        a mean squared error); given in part, the rest are ``REFINER_TRAIN``'s.
    inference : SkelEMInference
        Sampling options (old top-level names such as ``num_steps``,
        ``sample_seed``, ``halo_yx`` and ``planes_per_batch`` still load).
    pool_size : int
        Training pairs made once with the frozen skeleton; batches draw from
        them with random flips, noise and timesteps.
    truncated_fraction : float
        Fraction of training timesteps drawn from ``[0, t0]`` (the truncated
        range); the rest are uniform over all ``T`` levels (the full mode).
    cycle : CycleConfig, optional
        Cycle-consistency fine-tuning on the real volume; None skips it.
    prior : str or None
        Start the refiner from a prior instead of random weights: ``"shipped"``
        (the refiner prior inside the package, trained at factors 2 to 12) or
        the path of a prior's ``.pt`` file; ``train`` then fine-tunes it.
        None (the default of a bare config; ``vemrestore iso`` and
        ``api.configure`` start from the shipped prior unless told
        ``--from-scratch``).
    """

    # A ``train`` mapping given in part keeps the refiner's own defaults (REFINER_TRAIN).
    merge_partial_train: ClassVar[bool] = True
    legacy_names: ClassVar[dict[str, str]] = {
        **TrainedConfig.legacy_names,
        "num_steps": "num_inference_steps",
        "sample_seed": "seed",
        "mode": "mode",
        "strength": "strength",
        "num_samples": "num_samples",
        "consistency_projection": "consistency_projection",
    }

    method: Literal["skelem"] = "skelem"
    profile: Literal["box", "gaussian"] = "box"
    skeleton: SkeletonConfig | None = None
    skeleton_path: Path | None = None
    base_channels: int = Field(16, ge=1, le=512)
    depth: int = Field(2, ge=0, le=6)
    diffusion: DiffusionConfig = Field(default_factory=DiffusionConfig)
    halo_sections: int = Field(8, ge=0, le=256)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(**REFINER_TRAIN))
    inference: SkelEMInference = Field(default_factory=SkelEMInference)
    pool_size: int = Field(2048, ge=1, le=1_000_000)
    truncated_fraction: float = Field(0.5, ge=0.0, le=1.0)
    cycle: CycleConfig | None = Field(default_factory=CycleConfig)
    prior: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _fill_skeleton(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        # ``output`` chose one map per model before predict_block returned them all.
        data = {key: value for key, value in data.items() if key != "output"}
        # A skeleton given as a mapping inherits the factor and profile it leaves out.
        if isinstance(data.get("skeleton"), dict):
            skeleton = dict(data["skeleton"])
            if "scale_factor" in data:
                skeleton.setdefault("scale_factor", data["scale_factor"])
            skeleton.setdefault("profile", data.get("profile", "box"))
            data["skeleton"] = skeleton
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
        check_patch_fits_unet(self.train.patch_size, self.depth)
        check_sampling_levels(self.inference, self.diffusion)
        return self

    def training_stages(self) -> tuple[str, ...]:
        """The stages ``fit`` trains, in order.

        ``skeleton`` (unless ``skeleton_path`` gives a trained one), ``refiner``,
        ``cycle`` (unless ``cycle`` is None).
        """
        skeleton = ("skeleton",) if self.skeleton_path is None else ()
        cycle = ("cycle",) if self.cycle is not None else ()
        return (*skeleton, "refiner", *cycle)

    def with_step_budget(self, steps: int) -> Self:
        """This config with ``steps`` optimiser steps in all, split across its stages.

        The stages ``fit`` trains (``training_stages``) share the budget in
        the proportions of ``STEP_BUDGET_SHARES`` (skeleton 50 %, refiner
        40 %, cycle 10 %; renormalised over the stages there are: with
        ``skeleton_path``, refiner 80 % and cycle 20 %), at least one step
        each (``split_steps``, which refuses fewer steps than stages). Their
        other training options are kept.

        Examples
        --------
        >>> config = SkelEMConfig(scale_factor=4).with_step_budget(100)
        >>> config.skeleton.train.num_steps, config.train.num_steps, config.cycle.train.num_steps
        (50, 40, 10)
        >>> SkelEMConfig(scale_factor=4, skeleton_path="s").with_step_budget(100).train.num_steps
        80
        """
        counts = split_steps(steps, self.training_stages())

        def budgeted(train: TrainConfig, stage: str) -> TrainConfig:
            return train.model_copy(update={"num_steps": counts[stage]})

        update: dict[str, Any] = {"train": budgeted(self.train, "refiner")}
        if "skeleton" in counts:
            skeleton = self.skeleton_config()
            update["skeleton"] = skeleton.model_copy(
                update={"train": budgeted(skeleton.train, "skeleton")}
            )
        if self.cycle is not None:
            update["cycle"] = self.cycle.model_copy(
                update={"train": budgeted(self.cycle.train, "cycle")}
            )
        return type(self).model_validate(self.model_copy(update=update).model_dump())

    def skeleton_config(self) -> SkeletonConfig:
        """The skeleton to train: ``skeleton``, or the default one at this factor and profile."""
        if self.skeleton is not None:
            return self.skeleton
        return SkeletonConfig(scale_factor=self.scale_factor, profile=self.profile)


def split_steps(
    steps: int, stages: tuple[str, ...], shares: dict[str, float] | None = None
) -> dict[str, int]:
    """``steps`` split across ``stages`` as ``shares`` (default: SkelEM's
    ``STEP_BUDGET_SHARES``) say, at least 1 each.

    Shares are renormalised over ``stages`` and rounded by largest remainder
    (ties to the earlier stage), so the counts add up to ``steps`` exactly; a
    stage rounded to 0 takes a step from the largest.

    Raises
    ------
    UserInputError
        If ``steps`` is smaller than the number of stages.

    Examples
    --------
    >>> split_steps(12, ("skeleton", "refiner", "cycle"))
    {'skeleton': 6, 'refiner': 5, 'cycle': 1}
    >>> split_steps(3, ("skeleton", "refiner", "cycle"))
    {'skeleton': 1, 'refiner': 1, 'cycle': 1}
    """
    if steps < len(stages):
        raise UserInputError(
            f"a budget of {steps} training steps cannot give each of the "
            f"{len(stages)} training stages ({', '.join(stages)}) one step (give at least "
            f"{len(stages)})"
        )
    shares = STEP_BUDGET_SHARES if shares is None else shares
    total = sum(shares[stage] for stage in stages)
    exact = {stage: steps * shares[stage] / total for stage in stages}
    counts = {stage: math.floor(value) for stage, value in exact.items()}
    by_remainder = sorted(stages, key=lambda stage: counts[stage] - exact[stage])
    for stage in by_remainder[: steps - sum(counts.values())]:
        counts[stage] += 1
    for stage in stages:
        if counts[stage] == 0:
            counts[max(counts, key=counts.__getitem__)] -= 1
            counts[stage] = 1
    return counts
