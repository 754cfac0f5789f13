"""Training pairs of the lateral method: real pairs registered, synthetic pairs simulated.

Real pairs are registered LR/HR acquisitions of the same slices
(``register_pair``); synthetic pairs bin the HR slices and add the noise the
binning does not already carry (``added_noise``). ``PairSampler`` draws
random, augmented, normalised patch pairs from either. Noise models are
estimated from the data (``estimate_noise``); a denoised reference comes from
``denoise_reference``.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.filters import window
from skimage.registration import phase_cross_correlation
from skimage.restoration import denoise_nl_means

from vemrestore.degrade import (
    LateralDegradation,
    PoissonGaussianNoise,
    estimate_poisson_gaussian,
)
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods._trained import ArraySampler
from vemrestore.normalize import PercentileNormalization

__all__ = [
    "PairSampler",
    "Registration",
    "added_noise",
    "as_stack",
    "check_pair_shapes",
    "check_voxel_sizes",
    "denoise_reference",
    "estimate_noise",
    "register_pair",
    "upsample_bicubic",
]

logger = logging.getLogger(__name__)

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


def denoise_reference(hr: np.ndarray, gain: float, sigma: float) -> np.ndarray:
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


def estimate_noise(stack: np.ndarray) -> PoissonGaussianNoise:
    """Poisson-Gaussian noise model of a stack, from up to 8 evenly spaced slices."""
    ids = np.unique(np.linspace(0, stack.shape[0] - 1, _NOISE_SLICES).round().astype(int))
    estimate = estimate_poisson_gaussian(stack[ids])
    return PoissonGaussianNoise(gain=max(estimate.gain, 1e-6), sigma=estimate.sigma)


def added_noise(
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


def as_stack(data: Volume | np.ndarray, name: str) -> np.ndarray:
    """``data`` as a float32 stack (Z, Y, X); an image (Y, X) is one slice."""
    array = data.to_numpy() if isinstance(data, Volume) else np.asarray(data)
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or min(array.shape) == 0:
        raise UserInputError(
            f"{name} must be an image (Y, X) or a stack (Z, Y, X), got shape {array.shape}"
        )
    return array.astype(np.float32, copy=False)


def check_voxel_sizes(lr: Any, hr: Any, scale_factor: int) -> None:
    """Warn when known LR and HR voxel sizes disagree with ``scale_factor``."""
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


class PairSampler(ArraySampler):
    """Random (LR, HR) patches, rotated/flipped alike, normalised; LR is (N, C, P, P).

    C is 1, or 2 for the noisier-noisy objective (input and noisier input).
    LR patches come from ``lr`` (real pairs) or from ``source`` through
    ``degradation`` plus ``added_noise`` (synthetic pairs).
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
        """Normalised inputs (N, C, P, P) and targets (N, 1, f P, f P), float32."""
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
