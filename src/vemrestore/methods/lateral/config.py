"""Options of the lateral method: network, training pairs and losses, inference."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from vemrestore.methods._trained import InferenceConfig, TrainedConfig
from vemrestore.train import TrainConfig

__all__ = ["LateralConfig", "LateralInference", "LateralTrainConfig"]


class LateralTrainConfig(TrainConfig):
    """``TrainConfig`` with defaults for this method; ``patch_size`` is the LR patch side."""

    batch_size: int = Field(8, ge=1, le=4096)
    patch_size: int = Field(48, ge=8, le=2048)
    learning_rate: float = Field(5e-4, gt=0.0, le=1.0)


class LateralInference(InferenceConfig):
    """Prediction options of the lateral method.

    Attributes
    ----------
    halo : int or None
        LR pixels of context each side of a block's output region. None (the
        default) takes the network's own reach (``EdgeAttentionSRNet.context``),
        with which blockwise results equal whole-slice results; a smaller
        halo is faster but changes pixels near block borders.
    batch_size : int
        Slices per network call (formerly ``planes_per_batch``).
    """

    halo: int | None = Field(None, ge=0, le=4096)  # type: ignore[assignment]
    batch_size: int = Field(4, ge=1, le=4096)


class LateralConfig(TrainedConfig):
    """Options of the lateral super-resolution method.

    Attributes
    ----------
    scale_factor : int
        The LATERAL factor: 1 (denoising only), 2, 3 or 4. Each LR pixel
        becomes ``scale_factor x scale_factor`` pixels in Y and X; the number
        of slices is unchanged (unlike the axial ``AxialConfig.scale_factor``).
    channels, num_transformer_blocks, num_residual_blocks, window_size, num_heads,
    num_wavelet_levels : int
        Network size (see ``EdgeAttentionSRNet``).
    pairs : {"real", "synthetic"}
        Real LR/HR acquisitions, or LR synthesised from HR by the forward model.
    psf_sigma : float or None
        Gaussian PSF sigma (HR pixels) of the forward model (synthetic pairs).
    noise_gain, noise_sigma : float or None
        Poisson-Gaussian model of the LR noise in input intensity units; None
        estimates it (from the LR data, else the HR data). Give both or neither.
    reference : {"noisy", "denoised"}
        Train against the HR slices as they are, or denoised by non-local means.
    objective : {"supervised", "noisier-noisy"}
        Plain loss against the reference, or the noisier-noisy loss.
    noisier_strength : float
        Standard deviation of the extra noise relative to the LR noise model.
    noisier_weight, consistency_weight : float
        Weights of the noisier-input and consistency terms (noisier-noisy only;
        the clean-input term has weight 1).
    registration_tolerance : float
        Real pairs: shifts up to this many HR pixels are not resampled.
    train : LateralTrainConfig
        Training options (``train.loss`` is used by every loss term).
    inference : LateralInference
        Prediction options (``halo``, ``batch_size``, ``device``, ``amp``); the
        old top-level ``planes_per_batch`` still loads as ``inference.batch_size``.
    """

    legacy_names: ClassVar[dict[str, str]] = {"planes_per_batch": "batch_size"}

    method: Literal["lateral"] = "lateral"
    scale_factor: int = Field(
        2, ge=1, le=4, description="Lateral (Y, X) upsampling factor (1 = denoise only)"
    )
    channels: int = Field(32, ge=4, le=512)
    num_transformer_blocks: int = Field(2, ge=0, le=32)
    num_residual_blocks: int = Field(2, ge=0, le=64)
    window_size: int = Field(8, ge=2, le=64)
    num_heads: int = Field(4, ge=1, le=64)
    num_wavelet_levels: int = Field(3, ge=1, le=6)
    pairs: Literal["real", "synthetic"] = "synthetic"
    psf_sigma: float | None = Field(None, gt=0.0, le=64.0)
    noise_gain: float | None = Field(None, gt=0.0)
    noise_sigma: float | None = Field(None, ge=0.0)
    reference: Literal["noisy", "denoised"] = "noisy"
    objective: Literal["supervised", "noisier-noisy"] = "supervised"
    noisier_strength: float = Field(0.5, gt=0.0, le=4.0)
    noisier_weight: float = Field(1.0, ge=0.0)
    consistency_weight: float = Field(1.0, ge=0.0)
    registration_tolerance: float = Field(0.5, ge=0.0)
    train: LateralTrainConfig = Field(default_factory=LateralTrainConfig)
    inference: LateralInference = Field(default_factory=LateralInference)

    @model_validator(mode="after")
    def _check(self) -> LateralConfig:
        if (self.noise_gain is None) != (self.noise_sigma is None):
            raise ValueError(
                f"give both noise_gain and noise_sigma or neither (got noise_gain="
                f"{self.noise_gain}, noise_sigma={self.noise_sigma})"
            )
        if self.channels % self.num_heads:
            raise ValueError(
                f"channels={self.channels} must be divisible by num_heads={self.num_heads}"
            )
        return self
