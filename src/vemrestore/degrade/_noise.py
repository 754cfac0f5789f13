"""Poisson-Gaussian detector noise: simulation and estimation from one image.

Model: for a clean intensity ``x`` (e.g. 0..255),
``y = gain * Poisson(x / gain) + N(0, sigma^2)``, so ``E[y] = x`` and
``Var[y] = gain * x + sigma^2``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage, optimize, stats

from vemrestore.errors import UserInputError

__all__ = ["NoiseEstimate", "NoiseInfo", "PoissonGaussianNoise", "estimate_poisson_gaussian"]

# Separable second difference [1, -2, 1] x [1, -2, 1] / 6: zero response to
# planes (and to quadratics along either axis alone), unit gain for white noise
# (the squared weights sum to 36).
_RESIDUAL_KERNEL = np.outer([1.0, -2.0, 1.0], [1.0, -2.0, 1.0]).astype(np.float32) / 6.0
_MAD_TO_STD = 1.4826
_CLIP = 3.0
# Variance of a standard normal truncated to [-3, 3].
_CLIPPED_VARIANCE = 0.97333


@dataclass(frozen=True)
class NoiseInfo:
    """The parameters ``PoissonGaussianNoise.apply`` used."""

    gain: float
    sigma: float


@dataclass(frozen=True)
class PoissonGaussianNoise:
    """Add Poisson-Gaussian noise: ``gain * Poisson(x / gain) + N(0, sigma^2)``.

    Parameters
    ----------
    gain : float
        Intensity units per detected count (> 0); the signal-dependent
        variance is ``gain * x``.
    sigma : float
        Standard deviation of the signal-independent Gaussian part (>= 0).

    Notes
    -----
    Negative intensities are treated as zero (a Poisson rate cannot be
    negative): they come out as pure Gaussian noise around 0. NumPy results are
    float32; torch results keep a floating input dtype (else float32) and the
    device.

    Examples
    --------
    >>> import numpy as np
    >>> clean = np.full((64, 64), 100.0, dtype=np.float32)
    >>> noisy, info = PoissonGaussianNoise(gain=2.0, sigma=3.0).apply(clean, rng=0)
    >>> noisy.dtype, info.gain
    (dtype('float32'), 2.0)
    """

    gain: float
    sigma: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise UserInputError(
                f"noise gain must be > 0 (intensity units per count), got {self.gain}"
            )
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise UserInputError(f"noise sigma must be >= 0, got {self.sigma}")

    def variance(self, intensity: Any) -> Any:
        """Noise variance ``gain * intensity + sigma^2`` at a clean intensity."""
        return self.gain * intensity + self.sigma**2

    def apply(self, x: Any, *, rng: Any = None, generator: Any = None) -> tuple[Any, NoiseInfo]:
        """Return ``(noisy, info)``.

        Parameters
        ----------
        x : numpy.ndarray or torch.Tensor
            Clean intensities, any shape.
        rng : int or numpy.random.Generator, optional
            Seed or generator for NumPy input (``np.random.default_rng``).
        generator : torch.Generator, optional
            Generator for torch input, on the tensor's device.

        Returns
        -------
        noisy : numpy.ndarray (float32) or torch.Tensor
            Same shape as ``x``.
        info : NoiseInfo
        """
        info = NoiseInfo(gain=float(self.gain), sigma=float(self.sigma))
        if type(x).__module__.startswith("torch"):
            return self._apply_torch(x, generator), info
        rng = np.random.default_rng(rng)
        clean = np.asarray(x, dtype=np.float32)
        rate = np.clip(clean / np.float32(self.gain), 0, None)
        noisy = rng.poisson(rate).astype(np.float32) * np.float32(self.gain)
        if self.sigma > 0:
            noisy += np.float32(self.sigma) * rng.standard_normal(clean.shape, dtype=np.float32)
        return noisy, info

    def _apply_torch(self, x: Any, generator: Any) -> Any:
        import torch

        dtype = x.dtype if x.dtype.is_floating_point else torch.float32
        rate = torch.clamp(x.to(dtype) / self.gain, min=0)
        noisy = torch.poisson(rate, generator=generator) * self.gain
        if self.sigma > 0:
            noise = torch.randn(x.shape, generator=generator, dtype=dtype, device=x.device)
            noisy = noisy + self.sigma * noise
        return noisy


@dataclass(frozen=True)
class NoiseEstimate:
    """Poisson-Gaussian parameters estimated by ``estimate_poisson_gaussian``.

    Attributes
    ----------
    gain, sigma : float
        The fitted model ``Var = gain * mean + sigma^2`` (both >= 0).
    means, variances : numpy.ndarray
        The per-bin local means and robust variances the line was fitted to,
        for plotting the fit.
    """

    gain: float
    sigma: float
    means: np.ndarray
    variances: np.ndarray

    def variance(self, intensity: Any) -> Any:
        """Noise variance ``gain * intensity + sigma^2`` of the fitted model."""
        return self.gain * intensity + self.sigma**2

    def noise_model(self) -> PoissonGaussianNoise:
        """The estimate as a forward model, to synthesise matching noise."""
        return PoissonGaussianNoise(gain=self.gain, sigma=self.sigma)


def estimate_poisson_gaussian(
    image: Any, *, num_bins: int = 32, mean_size: int = 5
) -> NoiseEstimate:
    """Estimate Poisson-Gaussian noise parameters from one image or stack.

    A simplified version of Foi et al. (2008): a high-pass residual (the
    separable second difference, which removes planar structure and keeps
    the noise variance) gives one noise sample per pixel, a local box mean
    gives its intensity (the box weights are orthogonal to the residual
    kernel, so the two are uncorrelated under Gaussian noise). Pixels are
    put into ``num_bins`` equal-count bins of local mean, each bin's variance
    is estimated robustly from the median absolute deviation of its
    residuals, and ``Var = gain * mean + sigma^2`` is fitted to the bins by
    Theil-Sen regression. Neighbourhoods that touch the image's minimum or
    maximum value (clipping) are left out.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` image or ``(..., Y, X)`` stack of images of the same
        sample; each 2D slice is filtered on its own. Computed in float32.
    num_bins : int
        Number of intensity bins (>= 3).
    mean_size : int
        Odd side length (>= 3) of the box giving the local mean.

    Returns
    -------
    NoiseEstimate
        ``gain`` and ``sigma`` clipped at zero, with the binned points.

    Raises
    ------
    UserInputError
        If the image is not at least 2D, too small, or has too few usable
        pixels for the requested bins.

    References
    ----------
    A. Foi, M. Trimeche, V. Katkovnik, K. Egiazarian, "Practical
    Poissonian-Gaussian noise modeling and fitting for single-image raw-data",
    IEEE Trans. Image Process. 17(10), 2008. doi:10.1109/TIP.2008.2001399

    Examples
    --------
    >>> import numpy as np
    >>> y, x = np.mgrid[:128, :128]
    >>> clean = (20 + 200 * (x + y) / 254).astype(np.float32)
    >>> noisy, _ = PoissonGaussianNoise(gain=2.0, sigma=4.0).apply(clean, rng=0)
    >>> estimate = estimate_poisson_gaussian(noisy)
    >>> bool(1.5 < estimate.gain < 2.5)
    True
    """
    data = np.asarray(image, dtype=np.float32)
    if data.ndim < 2 or min(data.shape[-2:]) < mean_size + 2:
        raise UserInputError(
            f"noise estimation needs a (Y, X) image or (..., Y, X) stack with Y, X >= "
            f"{mean_size + 2}, got shape {data.shape}"
        )
    if num_bins < 3:
        raise UserInputError(f"num_bins must be >= 3, got {num_bins}")
    if mean_size < 3 or mean_size % 2 == 0:
        raise UserInputError(f"mean_size must be an odd integer >= 3, got {mean_size}")
    if not np.isfinite(data).all():
        raise UserInputError("noise estimation needs finite values (mask or fill NaN/inf first)")
    slices = data.reshape(-1, *data.shape[-2:])
    lo, hi = data.min(), data.max()
    residuals, means = [], []
    for plane in slices:
        residual = ndimage.correlate(plane, _RESIDUAL_KERNEL, mode="reflect")
        mean = ndimage.uniform_filter(plane, mean_size, mode="reflect")
        clipped = (ndimage.minimum_filter(plane, mean_size) <= lo) | (
            ndimage.maximum_filter(plane, mean_size) >= hi
        )
        keep = ~clipped
        # Filters reach past the border: drop a frame of mean_size // 2 pixels.
        border = mean_size // 2
        keep[:border] = keep[-border:] = False
        keep[:, :border] = keep[:, -border:] = False
        residuals.append(residual[keep])
        means.append(mean[keep])
    residual = np.concatenate(residuals)
    mean = np.concatenate(means)
    min_per_bin = 16
    if mean.size < num_bins * min_per_bin:
        raise UserInputError(
            f"only {mean.size} unclipped pixels for {num_bins} bins "
            f"(need {num_bins * min_per_bin}; give a larger image or fewer num_bins)"
        )
    order = np.argsort(mean, kind="stable")
    bin_means, bin_vars = [], []
    for chunk in np.array_split(order, num_bins):
        bin_means.append(float(np.mean(mean[chunk])))
        bin_vars.append(_robust_variance(residual[chunk]))
    bin_means_arr = np.asarray(bin_means)
    bin_vars_arr = np.asarray(bin_vars)
    gain, offset = _fit_line(bin_means_arr, bin_vars_arr)
    return NoiseEstimate(
        gain=gain,
        sigma=math.sqrt(offset),
        means=bin_means_arr,
        variances=bin_vars_arr,
    )


def _robust_variance(r: np.ndarray) -> float:
    """Variance of ``r`` after rejecting points beyond 3 MAD-sigmas (Gaussian-corrected)."""
    centre = np.median(r)
    scale = _MAD_TO_STD * np.median(np.abs(r - centre))
    inside = r[np.abs(r - centre) <= _CLIP * scale]
    if inside.size < 2:
        return float(scale**2)
    return float(np.var(inside, dtype=np.float64) / _CLIPPED_VARIANCE)


def _fit_line(means: np.ndarray, variances: np.ndarray) -> tuple[float, float]:
    """Robust fit of ``variances = gain * means + offset`` with ``gain, offset >= 0``.

    Theil-Sen gives a start; a Huber fit of the *relative* residuals then
    weights each bin by its precision (the error of a variance estimate is
    proportional to the variance) while still down-weighting outlier bins.
    """
    slope, intercept, _, slope_high = stats.theilslopes(variances, means)
    if slope_high < 0:
        warnings.warn(
            "noise variance decreases with intensity (Theil-Sen slope "
            f"{slope:.3g}, 95% upper bound {slope_high:.3g} < 0): the image is probably "
            "contrast-inverted, as SEM data often are; the gain is fitted as 0. "
            "Estimate on (white level - image) to model the shot noise",
            stacklevel=3,
        )
    scale = np.maximum(variances, np.finfo(np.float64).tiny)

    def relative_residuals(p: np.ndarray) -> np.ndarray:
        return (p[0] * means + p[1] - variances) / scale

    if slope > 0:
        start = np.array([slope, max(intercept, 0.0)])
    else:
        start = np.array([0.0, float(np.median(variances))])
    spread = _MAD_TO_STD * np.median(np.abs(relative_residuals(start)))
    if not spread > 0:
        return float(start[0]), float(start[1])
    fit = optimize.least_squares(
        relative_residuals, start, bounds=(0.0, np.inf), loss="huber", f_scale=spread
    )
    return float(fit.x[0]), float(fit.x[1])
