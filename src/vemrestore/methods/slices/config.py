"""Options of the slice restorers: classical interpolation and the diffusion model.

Sections are restored in place: the output grid is the input grid, so no
slice config has a ``scale_factor`` (an old config's ``scale_factor: 1``
is dropped on load).
"""

from __future__ import annotations

from functools import partial
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from vemrestore.diffusion import DiffusionConfig
from vemrestore.methods._base import MethodConfig
from vemrestore.methods._trained import SamplingConfig, TrainedConfig
from vemrestore.train import TrainConfig

__all__ = [
    "ClassicalSliceConfig",
    "DiffusionSlicesConfig",
    "FlowSlicesConfig",
    "LinearSlicesConfig",
    "SliceConfig",
    "SlicesInference",
]


# Value of an option the raw input does not give.
_ABSENT = object()


def _pop_option(data: Any, name: str) -> tuple[Any, Any]:
    """Raw config input without option ``name``, and its value (``_ABSENT`` if not given)."""
    if not isinstance(data, dict) or name not in data:
        return data, _ABSENT
    data = dict(data)
    return data, data.pop(name)


class SliceConfig(MethodConfig):
    """Options shared by the slice methods (the restored grid equals the input grid)."""

    @model_validator(mode="before")
    @classmethod
    def _drop_scale_factor(cls, data: Any) -> Any:
        # Configs saved before the axial grid was unified hold ``scale_factor: 1``.
        data, value = _pop_option(data, "scale_factor")
        if value is not _ABSENT and value != 1:
            raise ValueError(
                f"scale_factor={value!r}: slice methods restore sections in place on the "
                "input grid and take no scale_factor (remove it)"
            )
        return data


class ClassicalSliceConfig(SliceConfig):
    """Options of an interpolating slice restorer.

    Attributes
    ----------
    halo : int
        Pixels of context each side of a block in y and x (old name ``halo_yx``).
    """

    halo: int = Field(0, ge=0, le=4096)

    @model_validator(mode="before")
    @classmethod
    def _rename_halo(cls, data: Any) -> Any:
        data, value = _pop_option(data, "halo_yx")
        if value is not _ABSENT and data.setdefault("halo", value) != value:
            raise ValueError(
                f"halo_yx={value!r} (the old name of halo) contradicts halo={data['halo']!r} "
                "(keep only halo)"
            )
        return data


class LinearSlicesConfig(ClassicalSliceConfig):
    """Linear interpolation along z (no options)."""

    method: Literal["slices-linear"] = "slices-linear"


class FlowSlicesConfig(ClassicalSliceConfig):
    """Optical-flow interpolation; TV-L1 options of ``skimage.registration.optical_flow_tvl1``."""

    method: Literal["slices-flow"] = "slices-flow"
    halo: int = Field(32, ge=0, le=4096)
    attachment: float = Field(15.0, gt=0)
    tightness: float = Field(0.3, gt=0)
    num_warp: int = Field(5, ge=1, le=100)
    num_iter: int = Field(10, ge=1, le=1000)
    tol: float = Field(1e-4, gt=0)
    prefilter: bool = False


class SlicesInference(SamplingConfig):
    """How the diffusion restorer samples.

    Attributes
    ----------
    halo : int
        Context each side of a block in y and x; at least the network's
        receptive field (72 px at the default size), so that blocks give the
        same result as whole sections with ``estimate="linear"``. The flow
        estimate has no bounded reach: blocks differ from whole sections by
        about 1e-3 of the data range, far below the sampling noise (old
        name ``halo_yx``).
    num_inference_steps : int
        DDIM sampling steps (network calls) per restored run (old name
        ``num_steps``). 1 (with ``strength=1``) returns the network's
        estimate of the mean given the neighbours: the highest PSNR, but a
        smooth grey field in which membranes are lost; more steps draw a
        sample with sharp, realistic texture whose unpredictable detail costs
        PSNR (the perception-distortion trade-off).
    strength : float
        1: sample from pure noise; below 1: start from the estimate (linear
        or flow interpolation, ``DiffusionSlicesConfig.estimate``) noised to
        about ``strength * T`` (truncated sampling), which keeps the
        estimate's structure and lets the network correct it. The defaults,
        4 steps from 0.5, segment best on the ISBI 2012 benchmark
        (``benchmarks/slices_bench.py``; chosen on its scored sections).
    num_samples : int
        Samples averaged per run (more: closer to the mean, smoother, slower).
    seed : int
        Seed of the sampling noise (drawn per position, so blocks agree).
    """

    halo: int = Field(72, ge=0, le=4096)
    num_inference_steps: int = Field(4, ge=1, le=1000)
    strength: float = Field(0.5, gt=0.0, le=1.0)
    num_samples: int = Field(1, ge=1, le=64)


class DiffusionSlicesConfig(TrainedConfig, SliceConfig):
    """Options of the diffusion restorer.

    Attributes
    ----------
    num_context : int
        Given sections used on each side of a gap.
    base_channels, depth, stem_patch, num_heads, attention_heads : int
        Network size (see ``AnisotropicDenoiser3D``: channels after the
        stem, in-plane down-samplings, stem patch, output heads, heads of the
        boundary attention).
    max_gap : int
        Longest run of consecutive sections hidden during training; longer
        runs are restored too, with less accuracy.
    region_probability : float
        Share of single-section training samples that hide random regions
        rather than the whole section.
    estimate : {"linear", "flow"}
        The estimate the network is conditioned on and corrects: linear
        interpolation along z, or (the default) TV-L1 optical-flow
        interpolation between the sections bounding each gap, which moves
        membranes instead of doubling them (``slices-flow``'s default
        options; about 3 s per 512^2 gap to compute, at training and at
        prediction).
    prior : str or None
        Start training from these weights instead of random ones: ``"shipped"``
        (the prior inside the package, ``vemrestore.methods.priors.SLICES_PRIOR``)
        or the path of a prior's ``.pt`` file with its ``.json`` record beside
        it. Its network options and ``estimate`` must match this config's.
    diffusion : DiffusionConfig
        Noise schedule and prediction type (``sample``: the network predicts
        the correction to the estimate).
    train : TrainConfig
        Training options (``train.num_steps``: training steps).
    inference : SlicesInference
        Sampling options; the old top-level ``halo_yx``, ``num_steps``,
        ``strength``, ``num_samples`` and ``seed`` still load into it.
    """

    legacy_names: ClassVar[dict[str, str]] = {
        **TrainedConfig.legacy_names,
        "num_steps": "num_inference_steps",
        "strength": "strength",
        "num_samples": "num_samples",
        "seed": "seed",
    }

    # Models saved before the flow estimate existed were trained on linear interpolation.
    saved_defaults: ClassVar[dict[str, Any]] = {"estimate": "linear"}
    merge_partial_train: ClassVar[bool] = True

    method: Literal["slices-diffusion"] = "slices-diffusion"
    num_context: int = Field(1, ge=1, le=4)
    base_channels: int = Field(16, ge=4, le=256)
    depth: int = Field(2, ge=0, le=4)
    stem_patch: int = Field(2, ge=1, le=8)
    num_heads: int = Field(3, ge=1, le=8)
    attention_heads: int = Field(4, ge=1, le=32)
    max_gap: int = Field(2, ge=1, le=8)
    region_probability: float = Field(0.3, ge=0.0, le=1.0)
    estimate: Literal["linear", "flow"] = "flow"
    prior: str | None = None
    diffusion: DiffusionConfig = Field(
        default_factory=partial(DiffusionConfig, prediction_type="sample")
    )
    train: TrainConfig = Field(
        default_factory=partial(TrainConfig, num_steps=1500, batch_size=16, loss="l2")
    )
    inference: SlicesInference = Field(default_factory=SlicesInference)

    @property
    def size_multiple(self) -> int:
        """In-plane size the network's pooling needs: ``stem_patch * 2**depth``."""
        return self.stem_patch * 2**self.depth

    @model_validator(mode="after")
    def _check_sizes(self) -> DiffusionSlicesConfig:
        multiple = self.size_multiple
        if self.train.patch_size % multiple:
            raise ValueError(
                f"train.patch_size={self.train.patch_size} must be a multiple of "
                f"stem_patch * 2**depth = {multiple} (change patch_size, stem_patch or depth)"
            )
        if self.base_channels % self.attention_heads:
            raise ValueError(
                f"base_channels={self.base_channels} must be a multiple of "
                f"attention_heads={self.attention_heads}"
            )
        steps = self.inference.num_inference_steps
        if steps > self.diffusion.num_train_timesteps:
            raise ValueError(
                f"inference.num_inference_steps={steps} exceeds diffusion.num_train_timesteps="
                f"{self.diffusion.num_train_timesteps}"
            )
        return self
