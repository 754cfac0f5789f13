"""Lateral super-resolution and denoising learned without clean references ("lateral").

A fast acquisition gives coarse, noisy XY slices (LR); a slow one gives fine
pixels (HR) that are noisy too. An ``EdgeAttentionSRNet`` maps each LR slice
to an HR slice (x1 denoises only). Training pairs come from

- ``pairs="real"``: registered LR/HR acquisitions of the same slices (both
  noisy). Each HR slice is binned to LR size, its translation to the LR slice
  is found by phase correlation and, where it exceeds
  ``registration_tolerance`` HR pixels, the HR slice is shifted onto the LR one
  (cubic spline) and the borders the shift invalidates are cropped;
- ``pairs="synthetic"``: the HR slices through the forward model
  (``LateralDegradation``: pixel binning, optional Gaussian PSF) plus
  Poisson-Gaussian noise (``PoissonGaussianNoise``), drawn afresh for every
  patch. The LR noise model is ``noise_gain``/``noise_sigma`` when given, else
  estimated from the user's real LR data when given, else the HR noise model
  (the same dwell time per pixel). Binning already carries the HR noise,
  averaged over ``f**2`` pixels, so only the remainder is added.

With ``reference="denoised"`` the HR targets are denoised first (non-local
means after a generalized Anscombe transform with the estimated HR noise
model). Otherwise the targets are the noisy HR slices: with independent noise
of zero mean, an L2 loss is minimised by the clean image (Noise2Noise;
Lehtinen et al. 2018, https://doi.org/10.48550/arXiv.1803.04189), L1 by its
median. ``objective="noisier-noisy"`` adds noise of the LR model scaled by
``noisier_strength`` to a copy of every LR patch; the loss is
``L(f(lr), hr) + noisier_weight * L(f(noisier), hr) + consistency_weight *
L(f(noisier), stopgrad(f(lr)))``.

Prediction runs slice by slice on blocks in Y, X with a halo that covers the
network's reach (``EdgeAttentionSRNet.context``), block starts on multiples of
the attention window, so blockwise results equal whole-slice results.
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field, model_validator
from scipy import ndimage
from skimage.filters import window
from skimage.registration import phase_cross_correlation
from skimage.restoration import denoise_nl_means
from torch import nn

from vemrestore.degrade import (
    LateralDegradation,
    PoissonGaussianNoise,
    estimate_poisson_gaussian,
)
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._base import BlockRequest, MethodConfig, register_method
from vemrestore.methods._persist import (
    apply_weights,
    cpu_state,
    load_normalization,
    load_weights,
    require_files,
    save_trained,
    train_record,
    weights_digest,
)
from vemrestore.models.edge_attention import EdgeAttentionSRNet
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig, TrainResult, fit_model, pixel_loss, resolve_device

__all__ = [
    "LateralConfig",
    "LateralMethod",
    "LateralTrainConfig",
    "Registration",
    "check_pair_shapes",
    "register_pair",
    "train_lateral",
    "upsample_bicubic",
]

logger = logging.getLogger(__name__)

# Every VALIDATION_EVERY-th slice (offset VALIDATION_OFFSET) is held out for
# validation when the stack has at least MIN_SLICES_FOR_VALIDATION slices.
VALIDATION_EVERY = 10
VALIDATION_OFFSET = 5
MIN_SLICES_FOR_VALIDATION = 4
_VALIDATION_BATCHES = 4
# Slices read to estimate noise parameters (evenly spaced).
_NOISE_SLICES = 8


def upsample_bicubic(image: np.ndarray, scale_factor: int) -> np.ndarray:
    """Cubic-spline upsampling of the last two axes, aligned with pixel binning.

    ``scipy.ndimage.zoom(order=3, grid_mode=True, mode="reflect")``: output
    pixel ``j`` samples the input at ``(j + 0.5) / f - 0.5``, the centre of LR
    pixel ``i`` being HR position ``(i + 0.5) f - 0.5`` as in
    ``LateralDegradation``.

    Parameters
    ----------
    image : numpy.ndarray, shape (..., Y, X)
    scale_factor : int

    Returns
    -------
    numpy.ndarray of float32, shape (..., f Y, f X)

    Examples
    --------
    >>> upsample_bicubic(np.ones((3, 4), np.float32), 2).shape
    (6, 8)
    """
    data = np.asarray(image, dtype=np.float32)
    zoom = (1,) * (data.ndim - 2) + (scale_factor, scale_factor)
    out = ndimage.zoom(data, zoom, order=3, grid_mode=True, mode="reflect")
    return out.astype(np.float32, copy=False)


def check_pair_shapes(
    lr_shape: tuple[int, ...], hr_shape: tuple[int, ...], scale_factor: int
) -> tuple[int, int, int]:
    """Check that an HR stack is ``scale_factor`` times its LR stack in Y and X.

    HR may exceed ``f * LR`` by up to ``f - 1`` pixels (the factor's rounding);
    the excess is cropped at the end.

    Parameters
    ----------
    lr_shape, hr_shape : tuple of int
        Shapes (Z, Y, X) of the LR and HR stacks.
    scale_factor : int

    Returns
    -------
    tuple of int
        The HR shape to crop to, ``(Z, f Y_lr, f X_lr)``.

    Raises
    ------
    UserInputError
        If the numbers of slices differ or ``HR // f != LR`` in Y or X; the
        message names both shapes and the factor.
    """
    f = int(scale_factor)
    lr_shape, hr_shape = tuple(lr_shape), tuple(hr_shape)
    fits = (
        len(lr_shape) == len(hr_shape) == 3
        and lr_shape[0] == hr_shape[0]
        and all(h // f == n for h, n in zip(hr_shape[1:], lr_shape[1:], strict=True))
    )
    if not fits:
        expected = (
            f"({lr_shape[0]}, {f * lr_shape[1]}..{f * lr_shape[1] + f - 1}, "
            f"{f * lr_shape[2]}..{f * lr_shape[2] + f - 1})"
            if len(lr_shape) == 3
            else "(Z, f Y, f X)"
        )
        raise UserInputError(
            f"LR shape {lr_shape} and HR shape {hr_shape} do not match for scale_factor={f}: "
            f"HR should have the same number of slices and be {f} times LR in Y and X, i.e. "
            f"{expected} (check the factor, or crop the images to the same field of view)"
        )
    return (lr_shape[0], f * lr_shape[1], f * lr_shape[2])


@dataclass(frozen=True)
class Registration:
    """Result of ``register_pair``.

    Attributes
    ----------
    lr : numpy.ndarray of float32, shape (Z, Y, X)
        LR stack, cropped by ``margin`` pixels each side when a slice was shifted.
    hr : numpy.ndarray of float32, shape (Z, f Y, f X)
        HR stack registered onto ``lr`` and cropped alike.
    shifts : numpy.ndarray, shape (Z, 2)
        Estimated (y, x) shift of each HR slice, in LR pixels, that aligns it
        with its LR slice.
    margin : int
        LR pixels cropped at each border.
    """

    lr: np.ndarray
    hr: np.ndarray
    shifts: np.ndarray
    margin: int


def register_pair(
    lr: np.ndarray,
    hr: np.ndarray,
    scale_factor: int,
    *,
    upsample_factor: int = 20,
    tolerance: float = 0.5,
) -> Registration:
    """Align each HR slice to its LR slice by a translation (phase correlation).

    The HR slice is binned to LR size (``LateralDegradation``), the shift is
    estimated with ``skimage.registration.phase_cross_correlation`` (plain
    cross-correlation of the mean-subtracted, Hann-tapered slices, which is
    more robust to noise than phase normalisation; subpixel to
    ``1 / upsample_factor`` LR pixels) and,
    where it exceeds ``tolerance`` HR pixels, the HR slice is moved by
    ``scipy.ndimage.shift`` (cubic spline). The borders the largest shift
    invalidates are then cropped from both stacks.

    Parameters
    ----------
    lr : numpy.ndarray, shape (Z, Y, X)
    hr : numpy.ndarray, shape (Z, Y', X') with ``Y' // f == Y``, ``X' // f == X``
    scale_factor : int
    upsample_factor : int
        Subpixel precision of the shift estimate.
    tolerance : float
        Shifts up to this many HR pixels are left uncorrected (no resampling).

    Returns
    -------
    Registration

    Raises
    ------
    UserInputError
        If the shapes do not match (see ``check_pair_shapes``).
    """
    f = int(scale_factor)
    _, height, width = check_pair_shapes(lr.shape, hr.shape, f)
    lr = np.asarray(lr, dtype=np.float32)
    hr = np.asarray(hr[:, :height, :width], dtype=np.float32)
    binning = LateralDegradation(f)
    shifts = np.zeros((lr.shape[0], 2))
    registered = hr.copy()
    taper = window("hann", lr.shape[1:]).astype(np.float32)
    for z in range(lr.shape[0]):
        small, _ = binning.apply(hr[z])
        shift, _, _ = phase_cross_correlation(
            (lr[z] - lr[z].mean()) * taper,
            (small - small.mean()) * taper,
            upsample_factor=upsample_factor,
            normalization=None,
        )
        shifts[z] = shift
        if np.abs(shift).max() * f > tolerance:
            registered[z] = ndimage.shift(hr[z], shift * f, order=3, mode="reflect")
    moved = np.abs(shifts).max(axis=1) * f > tolerance
    margin = math.ceil(np.abs(shifts[moved]).max()) + 1 if moved.any() else 0
    if margin:
        if 2 * margin >= min(lr.shape[1:]):
            raise UserInputError(
                f"the HR slices are shifted by up to {np.abs(shifts).max():.1f} LR pixels, as "
                f"much as the LR slices are wide ({lr.shape[1:]}); the pair does not show the "
                "same field of view (check the files)"
            )
        lr = lr[:, margin:-margin, margin:-margin]
        registered = registered[:, f * margin : -f * margin, f * margin : -f * margin]
    logger.info(
        "registration: median |shift| %.2f, max %.2f LR pixels; %d of %d slices shifted",
        float(np.median(np.abs(shifts))),
        float(np.abs(shifts).max()),
        int(moved.sum()),
        moved.size,
    )
    return Registration(lr=lr, hr=np.ascontiguousarray(registered), shifts=shifts, margin=margin)


def _denoise_reference(hr: np.ndarray, gain: float, sigma: float) -> np.ndarray:
    """Non-local means after a generalized Anscombe transform (unit noise variance)."""
    out = np.empty_like(hr, dtype=np.float32)
    for z, plane in enumerate(hr):
        if gain > 0:
            stable = 2.0 / gain * np.sqrt(np.maximum(gain * plane + 0.375 * gain**2 + sigma**2, 0))
            smooth = denoise_nl_means(stable, h=0.8, sigma=1.0, fast_mode=True)
            out[z] = ((gain * smooth / 2) ** 2 - 0.375 * gain**2 - sigma**2) / gain
        elif sigma > 0:
            out[z] = denoise_nl_means(plane, h=0.8 * sigma, sigma=sigma, fast_mode=True)
        else:
            out[z] = plane
    return out


def _estimate_noise(stack: np.ndarray) -> PoissonGaussianNoise:
    ids = np.unique(np.linspace(0, stack.shape[0] - 1, _NOISE_SLICES).round().astype(int))
    estimate = estimate_poisson_gaussian(stack[ids])
    return PoissonGaussianNoise(gain=max(estimate.gain, 1e-6), sigma=estimate.sigma)


class LateralTrainConfig(TrainConfig):
    """``TrainConfig`` with defaults for this method; ``patch_size`` is the LR patch side."""

    batch_size: int = Field(8, ge=1, le=4096)
    patch_size: int = Field(48, ge=8, le=2048)
    learning_rate: float = Field(5e-4, gt=0.0, le=1.0)


class LateralConfig(MethodConfig):
    """Options of the lateral super-resolution method.

    Attributes
    ----------
    scale_factor : int
        Lateral factor 1 (denoising only), 2, 3 or 4.
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
    planes_per_batch : int
        Slices per network call at prediction time.
    train : LateralTrainConfig
        Training options (``train.loss`` is used by every loss term).
    """

    method: Literal["lateral"] = "lateral"
    scale_factor: int = Field(2, ge=1, le=4, description="Lateral upsampling factor (1 = denoise)")
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
    planes_per_batch: int = Field(4, ge=1, le=4096)
    train: LateralTrainConfig = Field(default_factory=LateralTrainConfig)

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


def _as_stack(data: Volume | np.ndarray, name: str) -> np.ndarray:
    array = data.to_numpy() if isinstance(data, Volume) else np.asarray(data)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise UserInputError(
            f"{name} must be an image (Y, X) or a stack (Z, Y, X), got shape {array.shape}"
        )
    return array.astype(np.float32, copy=False)


def _check_voxel_sizes(lr: Any, hr: Any, scale_factor: int) -> None:
    if not (isinstance(lr, Volume) and isinstance(hr, Volume)):
        return
    if (1.0, 1.0, 1.0) in (lr.voxel_size, hr.voxel_size):
        return  # unknown voxel size
    ratios = [a / b for a, b in zip(lr.voxel_size[1:], hr.voxel_size[1:], strict=True)]
    if any(abs(r / scale_factor - 1) > 0.01 for r in ratios):
        warnings.warn(
            f"LR voxel size {lr.voxel_size[1:]} nm over HR {hr.voxel_size[1:]} nm is "
            f"{ratios}, not scale_factor={scale_factor}",
            stacklevel=3,
        )


def _split_slices(num: int) -> tuple[np.ndarray, np.ndarray]:
    ids = np.arange(num)
    if num < MIN_SLICES_FOR_VALIDATION:
        return ids, ids[:0]
    is_val = ids % VALIDATION_EVERY == VALIDATION_OFFSET
    if not is_val.any():
        is_val[num // 2] = True
    return ids[~is_val], ids[is_val]


class _PairSampler:
    """Random (LR, HR) patches, rotated/flipped alike, normalised; LR is (N, C, P, P).

    C is 1, or 2 for the noisier-noisy objective (input and noisier input).
    """

    def __init__(
        self,
        *,
        target: np.ndarray,
        slice_ids: np.ndarray,
        scale_factor: int,
        patch_size: int,
        input_norm: PercentileNormalization,
        output_norm: PercentileNormalization,
        lr: np.ndarray | None = None,
        source: np.ndarray | None = None,
        degradation: LateralDegradation | None = None,
        added_noise: PoissonGaussianNoise | None = None,
        noisier: PoissonGaussianNoise | None = None,
    ) -> None:
        self.target, self.lr, self.source = target, lr, source
        self.slice_ids = slice_ids
        self.f, self.patch = scale_factor, patch_size
        self.input_norm, self.output_norm = input_norm, output_norm
        self.degradation, self.added_noise, self.noisier = degradation, added_noise, noisier
        lr_shape = target.shape[1] // scale_factor, target.shape[2] // scale_factor
        if min(lr_shape) < patch_size:
            raise UserInputError(
                f"train.patch_size={patch_size} needs LR slices of at least "
                f"{patch_size}x{patch_size} pixels, got {lr_shape[0]}x{lr_shape[1]} "
                "(use a smaller train.patch_size)"
            )

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        f, p = self.f, self.patch
        _, height, width = self.target.shape
        targets = np.empty((batch_size, 1, f * p, f * p), np.float32)
        inputs = np.empty((batch_size, 1, p, p), np.float32)
        sources = np.empty_like(targets) if self.source is not None else None
        for i in range(batch_size):
            z = rng.choice(self.slice_ids)
            y = int(rng.integers(height // f - p + 1))
            x = int(rng.integers(width // f - p + 1))
            turns, flip = int(rng.integers(4)), bool(rng.integers(2))

            def augment(a: np.ndarray, turns: int = turns, flip: bool = flip) -> np.ndarray:
                a = np.rot90(a, turns)
                return a[:, ::-1] if flip else a

            hr_window = (z, slice(f * y, f * (y + p)), slice(f * x, f * (x + p)))
            targets[i, 0] = augment(self.target[hr_window])
            if sources is not None:
                sources[i, 0] = augment(self.source[hr_window])
            else:
                inputs[i, 0] = augment(self.lr[z, y : y + p, x : x + p])  # type: ignore[index]
        if sources is not None:
            inputs, _ = self.degradation.apply(sources)  # type: ignore[union-attr]
            if self.added_noise is not None:
                inputs, _ = self.added_noise.apply(inputs, rng=rng)
        if self.noisier is not None:
            variance = self.noisier.variance(np.maximum(inputs, 0))
            extra = np.sqrt(variance) * rng.standard_normal(inputs.shape, dtype=np.float32)
            inputs = np.concatenate([inputs, inputs + extra], axis=1)
        return self.input_norm.apply(inputs), self.output_norm.apply(targets)

    def sample_batch(
        self, rng: np.random.Generator, batch_size: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = self.draw(rng, batch_size)
        return torch.from_numpy(inputs), torch.from_numpy(targets)


class _TwoInputs(nn.Module):
    """Runs the network on both input channels (input, noisier input) in one batch."""

    def __init__(self, net: EdgeAttentionSRNet) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        out = self.net(torch.cat([x[:, :1], x[:, 1:]], dim=0))
        return torch.cat([out[:n], out[n:]], dim=1)


def _noisier_noisy_loss(name: str, noisier_weight: float, consistency_weight: float) -> Any:
    loss = pixel_loss(name)

    def loss_fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        plain, noisier = prediction[:, :1], prediction[:, 1:]
        return (
            loss(plain, target)
            + noisier_weight * loss(noisier, target)
            + consistency_weight * loss(noisier, plain.detach())
        )

    return loss_fn


def _validation(
    sampler: _PairSampler, net: nn.Module, loss: Any, seed: int, batch_size: int
) -> Any:
    """``validate(model)`` scoring ``net`` on fixed patches of the held-out slices."""
    inputs, targets = sampler.draw(
        np.random.default_rng([seed, 1]), _VALIDATION_BATCHES * batch_size
    )
    batches = list(
        zip(
            torch.from_numpy(inputs).split(batch_size),
            torch.from_numpy(targets).split(batch_size),
            strict=True,
        )
    )

    def validate(model: nn.Module) -> float:
        # ``model`` may wrap ``net`` (noisier-noisy); the score is ``net``'s own.
        device = next(net.parameters()).device
        total = sum(
            float(loss(net(x.to(device)).float(), y.to(device))) * len(x) for x, y in batches
        )
        return total / len(inputs)

    return validate


def _lateral_window(s: slice, f: int, halo: int, multiple: int, size: int) -> slice:
    """LR range an HR output range needs, widened by ``halo`` and aligned down to ``multiple``."""
    lo = max(s.start // f - halo, 0) // multiple * multiple
    hi = min(-(-s.stop // f) + halo, size)
    return slice(lo, hi)


@register_method("lateral", LateralConfig)
class LateralMethod:
    """Lateral super-resolution (x2, x3, x4) and denoising (x1) of XY slices.

    Parameters
    ----------
    config : LateralConfig

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.io._volume import Volume
    >>> from vemrestore.methods import create_method
    >>> method = create_method("lateral", scale_factor=2, channels=8, num_heads=2,
    ...                        train={"num_steps": 2, "patch_size": 16, "batch_size": 2})
    >>> hr = Volume(np.random.default_rng(0).random((2, 64, 64), dtype=np.float32) * 100)
    >>> method = method.fit(hr, progress=False)
    >>> method.output_shape((2, 40, 40))
    (2, 80, 80)
    """

    name = "lateral"

    def __init__(self, config: LateralConfig) -> None:
        self.config = config
        self.model: EdgeAttentionSRNet | None = None
        self.input_norm: PercentileNormalization | None = None
        self.output_norm: PercentileNormalization | None = None
        self.train_result: TrainResult | None = None
        self.training_record: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._device: torch.device | None = None

    # -- state ---------------------------------------------------------------

    def _build_model(self) -> EdgeAttentionSRNet:
        cfg = self.config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.train.seed)
            return EdgeAttentionSRNet(
                cfg.scale_factor,
                channels=cfg.channels,
                num_transformer_blocks=cfg.num_transformer_blocks,
                num_residual_blocks=cfg.num_residual_blocks,
                window_size=cfg.window_size,
                num_heads=cfg.num_heads,
                num_wavelet_levels=cfg.num_wavelet_levels,
            )

    def run_fingerprint(self) -> dict[str, str]:
        """The weights' digest: a blockwise run resumes only with the same network."""
        model, _, _ = self._require_trained()
        return {"weights": weights_digest(model)}

    def _require_trained(
        self,
    ) -> tuple[EdgeAttentionSRNet, PercentileNormalization, PercentileNormalization]:
        if self.model is None or self.input_norm is None or self.output_norm is None:
            raise UserInputError(
                "the lateral method is not trained (call fit(volume) or load_method(path) first)"
            )
        return self.model, self.input_norm, self.output_norm

    def __getstate__(self) -> dict[str, Any]:
        # Picklable for dask.distributed: config, weights and statistics only.
        return {
            "config": self.config.model_dump(),
            "weights": None if self.model is None else cpu_state(self.model.state_dict()),
            "norms": None
            if self.input_norm is None or self.output_norm is None
            else (self.input_norm.to_dict(), self.output_norm.to_dict()),
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(LateralConfig.model_validate(state["config"]))  # type: ignore[misc]
        if state["weights"] is not None:
            self.model = self._build_model()
            self.model.load_state_dict(state["weights"])
            self.model.eval()
        if state["norms"] is not None:
            self.input_norm = PercentileNormalization.from_dict(state["norms"][0])
            self.output_norm = PercentileNormalization.from_dict(state["norms"][1])

    # -- training ------------------------------------------------------------

    def fit(
        self,
        volume: Volume | np.ndarray,
        *,
        lr: Volume | np.ndarray | None = None,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        progress: bool = True,
    ) -> LateralMethod:
        """Train on HR slices ``volume`` (and LR slices ``lr``).

        Parameters
        ----------
        volume : Volume or numpy.ndarray, shape (Z, Y, X) or (Y, X)
            The high-resolution slices (may be noisy), in input intensity units.
        lr : Volume or numpy.ndarray, optional
            ``pairs="real"``: the LR acquisitions of the same slices, shape
            (Z, Y // f, X // f) (registered here). ``pairs="synthetic"``: real
            LR data (any shape) from which the LR noise model is estimated.
        checkpoint_dir : pathlib.Path, optional
            Where training checkpoints go (see ``vemrestore.train.fit_model``).
        resume : bool
            Continue from the checkpoint in ``checkpoint_dir``.
        progress : bool
            Show a progress bar.

        Returns
        -------
        LateralMethod
            ``self``, trained.

        Raises
        ------
        UserInputError
            If ``pairs="real"`` without ``lr``, on mismatched shapes, or if the
            slices are smaller than the patch size.
        """
        cfg = self.config
        f = cfg.scale_factor
        hr = _as_stack(volume, "hr")
        lr_stack = None if lr is None else _as_stack(lr, "lr")
        if lr is not None:
            _check_voxel_sizes(lr, volume, f)
        if cfg.pairs == "real" and lr_stack is None:
            raise UserInputError(
                "pairs='real' needs the LR acquisitions (pass lr=..., or use pairs='synthetic' "
                "to simulate them from the HR slices)"
            )
        record: dict[str, Any] = {}
        sampler_options: dict[str, Any] = {}
        # HR noise: to denoise the reference, and (synthetic pairs) to know how
        # much noise binning already carries.
        hr_noise = None
        if cfg.reference == "denoised" or cfg.pairs == "synthetic":
            hr_noise = _estimate_noise(hr)
        lr_noise = None
        if cfg.noise_gain is not None:
            lr_noise = PoissonGaussianNoise(gain=cfg.noise_gain, sigma=cfg.noise_sigma)  # type: ignore[arg-type]
        elif cfg.pairs == "synthetic" or cfg.objective == "noisier-noisy":
            lr_noise = hr_noise if lr_stack is None else _estimate_noise(lr_stack)
        if cfg.pairs == "real":
            registration = register_pair(
                lr_stack,
                hr,
                f,
                tolerance=cfg.registration_tolerance,  # type: ignore[arg-type]
            )
            lr_stack, hr = registration.lr, registration.hr
            record["registration_shifts_lr_px"] = registration.shifts.round(3).tolist()
            record["registration_margin_lr_px"] = registration.margin
            input_norm = PercentileNormalization.from_data(lr_stack)
            sampler_options["lr"] = lr_stack
        else:
            hr = LateralDegradation(f).crop(hr)
            added = _added_noise(lr_noise, hr_noise, f)  # type: ignore[arg-type]
            sampler_options.update(
                source=hr,
                degradation=LateralDegradation(f, psf_sigma=cfg.psf_sigma),
                added_noise=added,
            )
            record["added_noise"] = None if added is None else vars(added)
        output_norm = PercentileNormalization.from_data(hr)
        if cfg.pairs == "synthetic":
            input_norm = output_norm
        target = hr
        if cfg.reference == "denoised":
            target = _denoise_reference(hr, hr_noise.gain, hr_noise.sigma)  # type: ignore[union-attr]
        record["lr_noise"] = None if lr_noise is None else vars(lr_noise)
        record["hr_noise"] = None if hr_noise is None else vars(hr_noise)

        train_ids, val_ids = _split_slices(hr.shape[0])
        common = {
            "target": target,
            "scale_factor": f,
            "patch_size": cfg.train.patch_size,
            "input_norm": input_norm,
            "output_norm": output_norm,
            **sampler_options,
        }
        net = self._build_model()
        loss = pixel_loss(cfg.train.loss)
        validate = None
        if val_ids.size:
            val_sampler = _PairSampler(slice_ids=val_ids, **common)
            validate = _validation(val_sampler, net, loss, cfg.train.seed, cfg.train.batch_size)
        if cfg.objective == "noisier-noisy":
            common["noisier"] = PoissonGaussianNoise(
                gain=lr_noise.gain * cfg.noisier_strength**2,  # type: ignore[union-attr]
                sigma=lr_noise.sigma * cfg.noisier_strength,  # type: ignore[union-attr]
            )
        sampler = _PairSampler(slice_ids=train_ids, **common)
        if cfg.objective == "noisier-noisy":
            trained: nn.Module = _TwoInputs(net)
            loss_fn = _noisier_noisy_loss(
                cfg.train.loss, cfg.noisier_weight, cfg.consistency_weight
            )
        else:
            trained, loss_fn = net, loss
        result = fit_model(
            trained,
            sample_batch=sampler.sample_batch,
            loss_fn=loss_fn,
            config=cfg.train,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            validate=validate,
            progress=progress,
        )
        with self._lock:
            self.model, self.train_result = net, result
            self.input_norm, self.output_norm = input_norm, output_norm
            self.training_record = record
            self._device = None
        return self

    # -- geometry ------------------------------------------------------------

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        z, y, x = input_shape
        f = self.config.scale_factor
        return (z, f * y, f * x)

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        z, y, x = voxel_size
        f = self.config.scale_factor
        return (z, y / f, x / f)

    @functools.cached_property
    def halo(self) -> int:
        """LR pixels of context each side of an output region (the network's reach)."""
        return self._build_model().context

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        zs, ys, xs = output_region
        _, height, width = input_shape
        f, multiple, halo = self.config.scale_factor, self.config.window_size, self.halo
        return (
            slice(zs.start, zs.stop),
            _lateral_window(ys, f, halo, multiple, height),
            _lateral_window(xs, f, halo, multiple, width),
        )

    # -- prediction ----------------------------------------------------------

    def _inference_model(self) -> tuple[EdgeAttentionSRNet, torch.device]:
        model, _, _ = self._require_trained()
        with self._lock:
            if self._device is None:
                self._device = resolve_device(self.config.train.device)
                if self._device.type == "cpu":
                    torch.set_flush_denormal(True)
                model.to(self._device).eval()
            return model, self._device

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> np.ndarray:
        """Restore ``request.output_region`` from an LR block with halo.

        Parameters
        ----------
        block : numpy.ndarray, shape (Z, Y, X)
            LR slices starting at ``request.input_start``; should cover
            ``input_region(request.output_region, ...)``.
        request : BlockRequest

        Returns
        -------
        numpy.ndarray of float32, shape ``request.output_shape``
        """
        _, input_norm, output_norm = self._require_trained()
        model, device = self._inference_model()
        f = self.config.scale_factor
        zs, ys, xs = request.output_region
        z0, y0, x0 = request.input_start
        _, height, width = block.shape
        y_win = _lateral_window(ys, f, self.halo, self.config.window_size, y0 + height)
        x_win = _lateral_window(xs, f, self.halo, self.config.window_size, x0 + width)
        if y_win.start < y0 or x_win.start < x0:
            raise ValueError(
                f"block starting at {request.input_start} lacks the context of output region "
                f"{request.output_region} (use input_region to read blocks)"
            )
        planes = input_norm.apply(
            block[
                zs.start - z0 : zs.stop - z0,
                y_win.start - y0 : y_win.stop - y0,
                x_win.start - x0 : x_win.stop - x0,
            ]
        )
        rows = slice(ys.start - f * y_win.start, ys.stop - f * y_win.start)
        cols = slice(xs.start - f * x_win.start, xs.stop - f * x_win.start)
        out = np.empty(request.output_shape, np.float32)
        amp = self.config.train.amp and device.type == "cuda"
        step = self.config.planes_per_batch
        for start in range(0, planes.shape[0], step):
            x = torch.from_numpy(np.ascontiguousarray(planes[start : start + step, None]))
            with torch.inference_mode(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                restored = model(x.to(device))
            out[start : start + step] = restored[:, 0, rows, cols].float().cpu().numpy()
        return output_norm.invert(out)

    # -- persistence ---------------------------------------------------------

    def save(self, path: Path) -> None:
        """Write ``config.json``, ``weights.pt`` (state_dict) and ``normalization.json``.

        A ``training.json`` with the loss history, the noise models and the
        registration shifts is added when the method was trained in this session.
        """
        model, input_norm, output_norm = self._require_trained()
        training = None
        if self.train_result is not None:
            training = train_record(self.train_result, model=model.config, **self.training_record)
        norms = {"input": input_norm.to_dict(), "output": output_norm.to_dict()}
        save_trained(path, self.config, model.state_dict(), normalization=norms, training=training)

    def load_state(self, path: Path) -> None:
        """Restore weights and normalisation written by ``save`` (see ``load_method``)."""
        require_files(path, ("weights.pt", "normalization.json"), "LateralMethod")
        weights = load_weights(path)
        norms = load_normalization(path)
        try:
            input_norm = PercentileNormalization.from_dict(norms["input"])
            output_norm = PercentileNormalization.from_dict(norms["output"])
        except (UserInputError, KeyError, ValueError, TypeError) as exc:
            raise UserInputError(
                f"{path} holds a corrupt or incomplete model ({exc}); save the method again"
            ) from exc
        model = self._build_model()
        apply_weights(model, weights, path)
        model.eval()
        with self._lock:
            self.model, self.input_norm, self.output_norm = model, input_norm, output_norm
            self._device = None


def _added_noise(
    lr_noise: PoissonGaussianNoise, hr_noise: PoissonGaussianNoise | None, scale_factor: int
) -> PoissonGaussianNoise | None:
    """Noise to add to binned HR so its total matches ``lr_noise``.

    Binning averages the HR noise over ``f**2`` pixels: its variance
    ``(gain x + sigma**2) / f**2`` is already present and subtracted here.
    """
    gain, variance = lr_noise.gain, lr_noise.sigma**2
    if hr_noise is not None:
        gain -= hr_noise.gain / scale_factor**2
        variance -= hr_noise.sigma**2 / scale_factor**2
    if gain <= 0 and variance <= 0:
        return None
    return PoissonGaussianNoise(gain=max(gain, 1e-6), sigma=math.sqrt(max(variance, 0.0)))


def train_lateral(
    hr: Volume | np.ndarray,
    *,
    lr: Volume | np.ndarray | None = None,
    scale_factor: int,
    out_dir: Path | None = None,
    pairs: Literal["real", "synthetic"] | None = None,
    checkpoint_dir: Path | None = None,
    resume: bool = False,
    progress: bool = True,
    **options: Any,
) -> LateralMethod:
    """Train the lateral method and save it to ``out_dir``.

    Parameters
    ----------
    hr : Volume or numpy.ndarray, shape (Z, Y, X) or (Y, X)
        High-resolution slices (may be noisy).
    lr : Volume or numpy.ndarray, optional
        LR acquisitions of the same slices, shape (Z, Y // f, X // f). When
        absent, LR slices are synthesised from ``hr`` (``pairs="synthetic"``).
    scale_factor : int
        1 (denoising), 2, 3 or 4.
    out_dir : pathlib.Path, optional
        Where the trained method is saved (``load_method(out_dir)`` reads it).
    pairs : {"real", "synthetic"}, optional
        Default: "real" when ``lr`` is given, else "synthetic". With
        "synthetic" and ``lr`` given, ``lr`` only serves to estimate the noise.
    checkpoint_dir : pathlib.Path, optional
        Training checkpoints; default ``out_dir / "checkpoints"``.
    resume : bool
        Continue from the last checkpoint.
    progress : bool
        Show a progress bar.
    **options
        Other ``LateralConfig`` fields (``objective``, ``train={...}``, ...).

    Returns
    -------
    LateralMethod
        Trained (and saved when ``out_dir`` is given).

    Raises
    ------
    UserInputError, pydantic.ValidationError
        On invalid options or data.

    Examples
    --------
    >>> import numpy as np
    >>> hr = np.random.default_rng(0).random((2, 64, 64), dtype=np.float32) * 100
    >>> method = train_lateral(hr, scale_factor=2, channels=8, num_heads=2, progress=False,
    ...                        train={"num_steps": 2, "patch_size": 16, "batch_size": 2})
    >>> method.output_voxel_size((10.0, 8.0, 8.0))
    (10.0, 4.0, 4.0)
    """
    from vemrestore.methods._base import create_method

    if pairs is None:
        pairs = "synthetic" if lr is None else "real"
    method = create_method("lateral", scale_factor=scale_factor, pairs=pairs, **options)
    if checkpoint_dir is None and out_dir is not None:
        checkpoint_dir = Path(out_dir) / "checkpoints"
    method.fit(hr, lr=lr, checkpoint_dir=checkpoint_dir, resume=resume, progress=progress)  # type: ignore[call-arg]
    if out_dir is not None:
        method.save(Path(out_dir))
    return method  # type: ignore[return-value]
