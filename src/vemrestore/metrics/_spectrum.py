"""Power-spectrum scores: radial log spectra of planes and high-frequency power along an axis."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy.signal import windows

from vemrestore.errors import UserInputError
from vemrestore.metrics._image import as_real_array

__all__ = ["radial_power_spectrum", "spectrum_log_error", "z_hf_ratio"]

_TINY = float(np.finfo(np.float32).tiny)


def _as_float(value: Any, *, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    return as_real_array(value, name=name, ndims=ndims).astype(np.float32, copy=False)


def _spacing(voxel_size: Any) -> tuple[float, float]:
    sizes = np.broadcast_to(np.asarray(voxel_size, dtype=np.float64), (2,))
    if not all(math.isfinite(s) and s > 0 for s in sizes):
        raise UserInputError(
            f"voxel_size must be one positive number or a (row, column) pair, got {voxel_size!r}"
        )
    return float(sizes[0]), float(sizes[1])


def radial_power_spectrum(planes: Any, *, voxel_size: Any) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged log10 power spectrum of 2D planes.

    Each plane has its mean removed and is multiplied by a 2D Hann window
    (limits leakage from the plane edges) before its FFT. The power
    ``|F|**2`` is averaged over the planes and over rings of equal spatial
    frequency; ring width is the coarser of the two axes' frequency steps,
    and rings reach the lower of the two Nyquist frequencies, so every ring
    is complete. The DC term is left out. Computed in float32.

    Parameters
    ----------
    planes : array_like, shape (N, H, W) or (H, W)
        Planes to analyse, e.g. the XZ planes ``volume.transpose(1, 0, 2)``.
        At least 4 pixels along each plane axis.
    voxel_size : float or (float, float)
        Pixel size along the plane's rows and columns (e.g. ``(z, x)`` in nm
        for XZ planes); one number for square pixels.

    Returns
    -------
    frequencies : numpy.ndarray
        Ring centres in cycles per unit of ``voxel_size``.
    log_power : numpy.ndarray
        ``log10`` of the mean power in each ring.

    Raises
    ------
    UserInputError
        Planes are not 2D/3D real arrays, are too small, or ``voxel_size``
        is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> planes = np.random.default_rng(0).random((2, 32, 32))
    >>> freqs, log_power = radial_power_spectrum(planes, voxel_size=1.0)
    >>> freqs[0], freqs[-1], log_power.shape
    (np.float64(0.03125), np.float64(0.5), (16,))
    """
    arr = _as_float(planes, name="planes", ndims=(2, 3))
    if arr.ndim == 2:
        arr = arr[None]
    height, width = arr.shape[1:]
    if min(height, width) < 4:
        raise UserInputError(f"planes have shape {arr.shape[1:]}; need at least 4x4 pixels each")
    dy, dx = _spacing(voxel_size)
    window = np.outer(windows.hann(height, sym=False), windows.hann(width, sym=False))
    arr = (arr - arr.mean(axis=(1, 2), keepdims=True)) * window.astype(np.float32)
    power = np.mean(np.abs(sp_fft.fft2(arr)) ** 2, axis=0)
    fy = sp_fft.fftfreq(height, d=dy)[:, None]
    fx = sp_fft.fftfreq(width, d=dx)[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    step = max(1.0 / (height * dy), 1.0 / (width * dx))
    n_rings = math.floor(min(0.5 / dy, 0.5 / dx) / step + 1e-9)
    ring = np.rint(radius / step).astype(np.int64).ravel()
    keep = (ring >= 1) & (ring <= n_rings)
    sums = np.bincount(ring[keep], weights=power.ravel()[keep], minlength=n_rings + 1)
    counts = np.bincount(ring[keep], minlength=n_rings + 1)
    mean_power = sums[1:] / np.maximum(counts[1:], 1)
    frequencies = step * np.arange(1, n_rings + 1)
    return frequencies, np.log10(np.maximum(mean_power, _TINY))


def spectrum_log_error(
    restored_planes: Any, true_planes: Any, *, voxel_size: Any, bands: int = 8
) -> dict[str, float]:
    """Mean absolute difference of two radial log10 power spectra, overall and per band.

    Both spectra come from :func:`radial_power_spectrum`. The rings are split
    into ``bands`` consecutive groups of (nearly) equal size, band 0 the
    lowest frequencies; each band's error is the mean over its rings.

    Parameters
    ----------
    restored_planes : array_like, shape (N, H, W) or (H, W)
        Planes of the restoration.
    true_planes : array_like, same shape as ``restored_planes``
        The matching planes of the ground truth.
    voxel_size : float or (float, float)
        Pixel size along the plane's rows and columns.
    bands : int, optional
        Number of frequency bands, at most the number of rings.

    Returns
    -------
    dict of str to float
        ``spectrum_log_error`` (decades) and ``spectrum_log_error_band<i>``
        for ``i`` in ``0 .. bands - 1``.

    Raises
    ------
    UserInputError
        Shapes differ, planes are not 2D/3D, or ``bands`` is out of range.

    Examples
    --------
    >>> import numpy as np
    >>> planes = np.random.default_rng(0).random((2, 32, 32))
    >>> spectrum_log_error(planes, planes, voxel_size=1.0, bands=2)
    {'spectrum_log_error': 0.0, 'spectrum_log_error_band0': 0.0, 'spectrum_log_error_band1': 0.0}
    """
    restored = _as_float(restored_planes, name="restored_planes", ndims=(2, 3))
    truth = _as_float(true_planes, name="true_planes", ndims=(2, 3))
    if restored.shape != truth.shape:
        raise UserInputError(
            f"restored_planes shape {restored.shape} differs from true_planes shape "
            f"{truth.shape} (take the same planes from both volumes)"
        )
    _, log_restored = radial_power_spectrum(restored, voxel_size=voxel_size)
    _, log_true = radial_power_spectrum(truth, voxel_size=voxel_size)
    diff = np.abs(log_restored - log_true)
    if (
        isinstance(bands, bool)
        or not isinstance(bands, int | np.integer)
        or not 1 <= bands <= diff.size
    ):
        raise UserInputError(
            f"bands must be an integer from 1 to {diff.size} (the ring count), got {bands!r}"
        )
    scores = {"spectrum_log_error": float(np.mean(diff))}
    for i, band in enumerate(np.array_split(diff, bands)):
        scores[f"spectrum_log_error_band{i}"] = float(np.mean(band))
    return scores


def _axis_power(volume: np.ndarray, axis: int) -> np.ndarray:
    """Power of 1D spectra along ``axis`` (mean removed, Hann window), averaged over the rest."""
    moved = np.moveaxis(volume, axis, -1)
    window = windows.hann(moved.shape[-1], sym=False).astype(np.float32)
    moved = (moved - moved.mean(axis=-1, keepdims=True)) * window
    power = np.abs(sp_fft.rfft(moved, axis=-1)) ** 2
    return power.reshape(-1, power.shape[-1]).mean(axis=0, dtype=np.float64)


def z_hf_ratio(restored: Any, truth: Any, *, axis: int = 0, cutoff: float = 0.25) -> float:
    """Fraction of the truth's high-frequency power along one axis that a restoration has.

    1D spectra along ``axis`` (each line with its mean removed and a Hann
    window applied) are averaged over the other axes; the power at
    frequencies above ``cutoff`` times Nyquist is summed for both volumes.
    The ratio restored/truth is 1.0 when the restoration matches the truth's
    high-frequency content, below 1 when it is too smooth (e.g. blurry
    interpolation across sections) and above 1 when it adds noise.

    Parameters
    ----------
    restored : array_like, shape (Z, Y, X) or (Y, X)
        Restoration to score.
    truth : array_like, same shape as ``restored``
        Ground truth; at least 4 voxels along ``axis``.
    axis : int, optional
        Axis of the spectra; 0 (Z) by default.
    cutoff : float, optional
        Lower edge of the high-frequency band as a fraction of Nyquist, in [0, 1).

    Returns
    -------
    float
        High-frequency power of ``restored`` over that of ``truth``.

    Raises
    ------
    UserInputError
        Shapes differ, ``axis`` or ``cutoff`` is out of range, or the truth
        has no power above the cutoff.

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.random.default_rng(0).random((16, 8, 8))
    >>> z_hf_ratio(vol, vol)
    1.0
    """
    rest = _as_float(restored, name="restored", ndims=(2, 3))
    true = _as_float(truth, name="truth", ndims=(2, 3))
    if rest.shape != true.shape:
        raise UserInputError(
            f"restored shape {rest.shape} differs from truth shape {true.shape} "
            "(crop or resample them to the same grid first)"
        )
    if not -true.ndim <= axis < true.ndim:
        raise UserInputError(f"axis {axis!r} is out of range for {true.ndim}D input")
    if true.shape[axis] < 4:
        raise UserInputError(f"truth has {true.shape[axis]} voxels along axis {axis}; need >= 4")
    if not 0 <= cutoff < 1:
        raise UserInputError(f"cutoff must be a fraction of Nyquist in [0, 1), got {cutoff!r}")
    high = sp_fft.rfftfreq(true.shape[axis]) > cutoff * 0.5
    true_power = float(_axis_power(true, axis)[high].sum())
    if not true_power > 0:
        raise UserInputError(
            f"truth has no power above {cutoff} of Nyquist along axis {axis} "
            "(lower cutoff or check that the truth is not constant)"
        )
    return float(_axis_power(rest, axis)[high].sum()) / true_power
