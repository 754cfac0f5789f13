"""Fourier ring correlation (FRC) and the resolution it implies, from two images or one."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from scipy.signal import windows

from vemrestore.errors import UserInputError
from vemrestore.metrics._image import PLANE_AXIS, as_real_array, check_pair

__all__ = [
    "FRCCurve",
    "FRCResolution",
    "fourier_ring_correlation",
    "frc_resolution",
    "plane_frc_resolution",
    "single_image_frc",
]

_TUKEY_ALPHA = 0.25  # cosine taper over the outer 12.5 % of each side
_MIN_SIDE = 16  # smallest image side for a two-image FRC (8 rings)
_SMOOTH_BINS = 3  # moving average before the threshold search
_IGNORED_LOW_BINS = 3  # rings 0..2 (DC and the window's leakage) never count as a crossing
_PIXEL_RTOL = 1e-3  # in-plane pixel sizes equal within this relative tolerance

# Two diagonal pairs of the 2x2 checkerboard: (rows, cols) of sub-image A, of B, and
# the position of B's grid relative to A's, in sub-image pixels (row, col).
_PAIRS = (
    ((slice(0, None, 2), slice(0, None, 2)), (slice(1, None, 2), slice(1, None, 2)), (0.5, 0.5)),
    ((slice(0, None, 2), slice(1, None, 2)), (slice(1, None, 2), slice(0, None, 2)), (0.5, -0.5)),
)


@dataclass(frozen=True)
class FRCCurve:
    """A Fourier ring correlation curve.

    Attributes
    ----------
    frequencies : numpy.ndarray of float64
        Ring centres in cycles per pixel of the image that was measured
        (0 to 0.5 for two images; 0 to 0.25 for :func:`single_image_frc`).
    correlation : numpy.ndarray of float64
        Correlation in each ring, in [-1, 1]; 0 where a ring holds no power.
    num_samples : numpy.ndarray of int64
        Number of Fourier samples in each ring (summed over pairs and planes
        where curves were pooled).
    """

    frequencies: np.ndarray
    correlation: np.ndarray
    num_samples: np.ndarray


@dataclass(frozen=True)
class FRCResolution:
    """Resolution read from an FRC curve.

    Attributes
    ----------
    resolution_nm : float
        ``pixel_size_nm / crossing frequency``. When the curve never falls
        below the threshold, the finest resolution the curve can show:
        ``pixel_size_nm / frequencies[-1]`` (2 pixels for two images, 4 for a
        single image).
    crossed : bool
        False when the curve stayed above the threshold, so ``resolution_nm``
        is only an upper bound (the true resolution may be finer).
    curve : FRCCurve
        The curve the resolution was read from (unsmoothed).
    """

    resolution_nm: float
    crossed: bool
    curve: FRCCurve


def _ring_sums(
    image1: np.ndarray,
    image2: np.ndarray,
    num_bins: int,
    shift: tuple[float, float] = (0.0, 0.0),
    sector_deg: float | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-ring sums of the cross spectrum, both power spectra and the sample counts.

    Each image has its mean removed and is tapered by a separable Tukey
    window. ``shift`` (row, col, in pixels) is where image2's sampling grid
    sits relative to image1's; its phase ramp is removed from image2's
    spectrum so that an offset grid is compared with the object where
    image1 sees it. Ring ``i`` holds frequencies within half a ring width of
    ``i * 0.5 / num_bins`` cycles per pixel (radius from both axes'
    ``fftfreq``); frequencies beyond Nyquist's ring are dropped. With
    ``sector_deg``, only frequencies within that angle of the row axis count.
    """
    ny, nx = image1.shape
    window = np.outer(windows.tukey(ny, _TUKEY_ALPHA), windows.tukey(nx, _TUKEY_ALPHA))
    window = window.astype(np.float32)
    spectrum1 = np.fft.fft2((image1 - image1.mean()) * window)
    spectrum2 = np.fft.fft2((image2 - image2.mean()) * window)
    fy = np.fft.fftfreq(ny)[:, None]
    fx = np.fft.fftfreq(nx)[None, :]
    if shift != (0.0, 0.0):
        spectrum2 = spectrum2 * np.exp(-2j * np.pi * (fy * shift[0] + fx * shift[1]))
    radius = np.hypot(fy, fx)
    ring = np.rint(radius * (2 * num_bins)).astype(np.intp).ravel()
    keep = ring <= num_bins
    if sector_deg is not None:
        keep &= (np.abs(fy) >= np.cos(np.deg2rad(sector_deg)) * radius).ravel()
    ring = ring[keep]

    def per_ring(values: np.ndarray) -> np.ndarray:
        return np.bincount(ring, weights=values.ravel()[keep], minlength=num_bins + 1)

    cross = per_ring((spectrum1 * np.conj(spectrum2)).real)
    power1 = per_ring(np.abs(spectrum1) ** 2)
    power2 = per_ring(np.abs(spectrum2) ** 2)
    counts = np.bincount(ring, minlength=num_bins + 1).astype(np.int64)
    return cross, power1, power2, counts


def _correlation(cross: np.ndarray, power1: np.ndarray, power2: np.ndarray) -> np.ndarray:
    denominator = np.sqrt(power1 * power2)
    return np.divide(cross, denominator, out=np.zeros_like(cross), where=denominator > 0).clip(
        -1.0, 1.0
    )


def _check_image(image: Any, *, name: str, min_side: int) -> np.ndarray:
    arr = as_real_array(image, name=name, ndims=(2,))
    if min(arr.shape) < min_side:
        raise UserInputError(
            f"{name} has shape {arr.shape}; FRC needs at least {min_side} pixels per side "
            "(use a larger image)"
        )
    if arr.min() == arr.max():
        raise UserInputError(
            f"{name} is constant (all values {arr.flat[0]}); FRC is undefined for an image "
            "without structure (crop away padding or empty regions)"
        )
    return arr.astype(np.float32, copy=False)


def _check_num_bins(num_bins: int | None, shape: tuple[int, ...]) -> int:
    most = min(shape) // 2
    if num_bins is None:
        return most
    if not (isinstance(num_bins, int | np.integer) and 1 <= num_bins <= most):
        raise UserInputError(
            f"num_bins must be an integer from 1 to {most} for images of shape {shape}, "
            f"got {num_bins!r} (leave it unset for one ring per Fourier pixel)"
        )
    return int(num_bins)


def fourier_ring_correlation(
    image1: Any, image2: Any, *, num_bins: int | None = None, sector_deg: float | None = None
) -> FRCCurve:
    """Fourier ring correlation of two 2D images of one object with independent noise.

    ``FRC(r) = Re sum F1 F2* / sqrt(sum |F1|^2 sum |F2|^2)`` over the Fourier
    samples of ring ``r``. Each image has its mean removed and is tapered by
    a Tukey window (``alpha=0.25``) so that the image border adds no spurious
    high-frequency correlation. Radial frequency uses ``numpy.fft.fftfreq``
    on both axes, so rectangular images need no padding. Computed in float32
    (sums in float64).

    Parameters
    ----------
    image1, image2 : array_like, shape (Y, X)
        Two images of one field of view with independent noise, at least
        16 pixels per side.
    num_bins : int, optional
        Number of rings between 0 and Nyquist; default ``min(Y, X) // 2``
        (one ring per Fourier pixel along the shorter side). The curve has
        ``num_bins + 1`` points, DC included.
    sector_deg : float, optional
        Keep only Fourier samples within this angle (degrees, 0-90) of the
        row axis: a directional FRC, e.g. the axial resolution of an XZ
        plane whose rows run along z.

    Returns
    -------
    FRCCurve
        Frequencies from 0 to 0.5 cycles per pixel.

    Raises
    ------
    UserInputError
        Shapes differ, an image is not 2D, too small or constant, or
        ``num_bins`` is out of range.

    References
    ----------
    van Heel, M. & Schatz, M. Fourier shell correlation threshold criteria.
    J. Struct. Biol. 151, 250-262 (2005). :doi:`10.1016/j.jsb.2005.05.009`

    Examples
    --------
    >>> import numpy as np
    >>> image = np.random.default_rng(0).random((32, 32))
    >>> curve = fourier_ring_correlation(image, image)
    >>> curve.frequencies[[0, -1]].tolist(), bool(np.allclose(curve.correlation, 1.0))
    ([0.0, 0.5], True)
    """
    a, b = check_pair(image1, image2, names=("image1", "image2"), ndims=(2,))
    a = _check_image(a, name="image1", min_side=_MIN_SIDE)
    b = _check_image(b, name="image2", min_side=_MIN_SIDE)
    bins = _check_num_bins(num_bins, a.shape)
    if sector_deg is not None and not 0 < sector_deg <= 90:
        raise UserInputError(f"sector_deg must be in (0, 90] degrees, got {sector_deg!r}")
    cross, power1, power2, counts = _ring_sums(a, b, bins, sector_deg=sector_deg)
    frequencies = np.arange(bins + 1) * (0.5 / bins)
    return FRCCurve(frequencies, _correlation(cross, power1, power2), counts)


def single_image_frc(image: Any, *, num_bins: int | None = None) -> FRCCurve:
    """FRC of one image, from two diagonal checkerboard splits (after Koho et al. 2019).

    The image (cropped to even sides) is split into its 2x2 polyphase
    sub-images. Diagonal neighbours see the same object with independent
    noise when the pixel noise is independent, so the FRC is taken between
    ``x[0::2, 0::2]`` and ``x[1::2, 1::2]`` and between ``x[0::2, 1::2]`` and
    ``x[1::2, 0::2]``; the two pairs' ring sums are pooled, so every pixel
    is used.

    The second image of a pair samples the object half a sub-image pixel
    away diagonally. Instead of Koho et al.'s empirical calibration of the
    resulting bias, that known offset is removed exactly by a Fourier phase
    ramp (a unitary operation, so the noise stays independent). Without it
    the curve of a noise-free isotropic image would fall like
    ``J0(2 pi sqrt(2) f)`` (``f`` in cycles per original pixel) and cross 1/7
    near 0.23 cycles per pixel whatever the noise. Components
    aliased into the half-resolution sub-images still carry the wrong phase,
    so the correlation of very sharp content is slightly underestimated.

    Frequencies are given in cycles per *original* pixel: sub-image
    frequencies divided by 2, from 0 to 0.25. The finest resolution this
    can report is therefore 4 pixels.

    Parameters
    ----------
    image : array_like, shape (Y, X)
        Raw image, at least 32 pixels per side.
    num_bins : int, optional
        Rings between 0 and the sub-images' Nyquist; default
        ``min(Y, X) // 4``.

    Returns
    -------
    FRCCurve
        Frequencies from 0 to 0.25 cycles per original pixel.

    Raises
    ------
    UserInputError
        The image is not 2D, smaller than 32 pixels per side or constant,
        or ``num_bins`` is out of range.

    Notes
    -----
    The method assumes pixel noise independent between diagonal
    neighbours. Smoothing (a blur, interpolation, denoising, any
    restoration) correlates the noise, which then counts as signal: the
    curve rises and the resolution looks *finer* or the curve never crosses.
    An isotropic linear filter applied without new noise scales signal and
    noise alike in every ring, so no FRC can rank such copies by blur;
    blur followed by fresh independent noise (the acquisition model) does
    give coarser resolutions. Use it on raw acquisitions; compare processed
    volumes with the ground truth, or with :func:`fourier_ring_correlation`
    of two results restored from independent halves of the data.

    References
    ----------
    Koho, S. et al. Fourier ring correlation simplifies image restoration in
    fluorescence microscopy. Nat. Commun. 10, 3103 (2019).
    :doi:`10.1038/s41467-019-11024-z`

    Examples
    --------
    >>> import numpy as np
    >>> noise = np.random.default_rng(0).normal(size=(64, 64))
    >>> curve = single_image_frc(noise)
    >>> float(curve.frequencies[-1]), bool(np.abs(curve.correlation[3:]).max() < 0.5)
    (0.25, True)
    """
    x = _check_image(image, name="image", min_side=2 * _MIN_SIDE)
    ny, nx = (s - s % 2 for s in x.shape)
    x = x[:ny, :nx]
    bins = _check_num_bins(num_bins, (ny // 2, nx // 2))
    sums = [_ring_sums(x[where_a], x[where_b], bins, shift) for where_a, where_b, shift in _PAIRS]
    cross, power1, power2, counts = (sum(parts) for parts in zip(*sums, strict=True))
    frequencies = np.arange(bins + 1) * (0.25 / bins)
    return FRCCurve(frequencies, _correlation(cross, power1, power2), counts)


def _moving_average(values: np.ndarray, width: int) -> np.ndarray:
    padded = np.pad(values, width // 2, mode="edge")
    return np.convolve(padded, np.full(width, 1.0 / width), mode="valid")


def frc_resolution(
    curve: FRCCurve, *, pixel_size_nm: float, threshold: float = 1 / 7
) -> FRCResolution:
    """Resolution (nm) where an FRC curve first falls below ``threshold``.

    The curve is smoothed by a 3-ring moving average; the search starts at
    ring 3, so the DC ring and the window's low-frequency leakage never
    count. The crossing frequency is interpolated linearly between the last
    ring at or above the threshold and the first below it, and the
    resolution is ``pixel_size_nm / frequency``. If the smoothed curve is
    already below the threshold at ring 3, the resolution is read at ring 2.

    Parameters
    ----------
    curve : FRCCurve
        From :func:`fourier_ring_correlation` or :func:`single_image_frc`;
        at least 5 rings.
    pixel_size_nm : float
        Pixel size of the image the curve was measured on, in nm.
    threshold : float
        Correlation threshold in (0, 1); default 1/7 (Rosenthal & Henderson
        2003).

    Returns
    -------
    FRCResolution
        With ``crossed=False`` and the curve's finest resolution
        (``pixel_size_nm / curve.frequencies[-1]``; 2 pixels for a
        two-image curve) when the curve never falls below the threshold.

    Raises
    ------
    UserInputError
        ``pixel_size_nm`` or ``threshold`` out of range, or the curve too short.

    Examples
    --------
    >>> import numpy as np
    >>> f = np.linspace(0, 0.5, 11)
    >>> curve = FRCCurve(f, np.clip(1 - 4 * f, -1, 1), np.ones(11, dtype=np.int64))
    >>> result = frc_resolution(curve, pixel_size_nm=10.0)
    >>> round(result.resolution_nm, 1), result.crossed
    (46.7, True)
    """
    size = float(pixel_size_nm)
    if not (math.isfinite(size) and size > 0):
        raise UserInputError(f"pixel_size_nm must be a finite number > 0, got {pixel_size_nm!r}")
    if not 0 < threshold < 1:
        raise UserInputError(
            f"threshold must lie in (0, 1), got {threshold!r} (1/7 is the usual choice)"
        )
    frequencies = np.asarray(curve.frequencies, dtype=np.float64)
    if frequencies.size < _IGNORED_LOW_BINS + 2:
        raise UserInputError(
            f"the FRC curve has {frequencies.size} rings; reading a resolution needs at least "
            f"{_IGNORED_LOW_BINS + 2} (use a larger image or more num_bins)"
        )
    smooth = _moving_average(np.asarray(curve.correlation, dtype=np.float64), _SMOOTH_BINS)
    below = np.flatnonzero(smooth[_IGNORED_LOW_BINS:] < threshold)
    if below.size == 0:
        return FRCResolution(size / float(frequencies[-1]), False, curve)
    i = _IGNORED_LOW_BINS + int(below[0])
    before, after = smooth[i - 1], smooth[i]
    step = frequencies[i] - frequencies[i - 1]
    fraction = (before - threshold) / (before - after) if before >= threshold else 0.0
    frequency = frequencies[i - 1] + fraction * step
    return FRCResolution(size / float(frequency), True, curve)


def plane_frc_resolution(
    volume: Any,
    *,
    orientation: Literal["xy", "xz", "yz"],
    voxel_size: tuple[float, float, float],
    max_planes: int = 32,
    threshold: float = 1 / 7,
    reference: Any = None,
    sector_deg: float | None = None,
) -> FRCResolution:
    """FRC resolution of the planes of one orientation of a volume.

    Without ``reference`` each plane's curve is its single-image FRC; with a
    ``reference`` volume (the ground truth, same shape) it is the two-image FRC
    between the plane and the reference's plane: the finest scale at which the
    volume still agrees with the truth.

    Takes up to ``max_planes`` evenly spaced planes (the centres of equal
    blocks along the plane axis; deterministic) of orientation ``xy``
    (``volume[z]``, pixels ``(y, x)``), ``xz`` (``volume[:, y]``, pixels
    ``(z, x)``) or ``yz`` (``volume[:, :, x]``, pixels ``(z, y)``), averages
    their :func:`single_image_frc` curves and reads the resolution with
    :func:`frc_resolution`. Only the chosen planes are read, so a dask
    array stays lazy.

    Parameters
    ----------
    volume : array_like, shape (Z, Y, X)
        NumPy or dask array; each plane at least 32 pixels per side.
    orientation : {"xy", "xz", "yz"}
        Which planes to measure.
    voxel_size : tuple of float
        (z, y, x) in nm. The two in-plane sizes must be equal.
    max_planes : int
        Most planes to average; default 32.
    threshold : float
        Passed to :func:`frc_resolution`; default 1/7.
    reference : array_like, shape (Z, Y, X), optional
        Ground truth to correlate with, plane by plane.
    sector_deg : float, optional
        With ``reference``: count only frequencies within this angle of the
        plane's row axis (z for XZ and YZ planes), i.e. the axial resolution
        measured against the truth. See :func:`fourier_ring_correlation`.

    Returns
    -------
    FRCResolution
        In nm, along the plane. ``num_samples`` of the curve is summed over
        the planes.

    Raises
    ------
    UserInputError
        Unknown orientation, volume not 3D, non-square in-plane pixels
        (resample to an isotropic grid first), a constant plane, or
        ``max_planes`` below 1.

    Notes
    -----
    The single-image FRC needs pixel noise independent between diagonal
    neighbours (see :func:`single_image_frc`): on a restored or otherwise
    smoothed volume it overstates the resolution, most of all across the
    sections (XZ, YZ) of an interpolated volume.

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.random.default_rng(0).normal(size=(32, 32, 32)).astype(np.float32)
    >>> result = plane_frc_resolution(volume, orientation="xz", voxel_size=(10, 10, 10))
    >>> result.crossed, result.resolution_nm > 40
    (True, True)
    """
    if orientation not in PLANE_AXIS:
        raise UserInputError(
            f"orientation must be one of {sorted(PLANE_AXIS)}, got {orientation!r}"
        )
    if not hasattr(volume, "shape"):
        volume = np.asarray(volume)
    if volume.ndim != 3:
        raise UserInputError(f"volume has shape {volume.shape}; expected a 3D (Z, Y, X) array")
    sizes = tuple(float(v) for v in voxel_size)
    if len(sizes) != 3 or not all(math.isfinite(v) and v > 0 for v in sizes):
        raise UserInputError(
            f"voxel_size must be three positive numbers (z, y, x) in nm, got {voxel_size!r}"
        )
    if not (isinstance(max_planes, int | np.integer) and max_planes >= 1):
        raise UserInputError(f"max_planes must be an integer >= 1, got {max_planes!r}")
    axis = PLANE_AXIS[orientation]
    in_plane = [sizes[a] for a in range(3) if a != axis]
    if not math.isclose(in_plane[0], in_plane[1], rel_tol=_PIXEL_RTOL):
        raise UserInputError(
            f"{orientation} planes have pixels of {in_plane[0]:g} x {in_plane[1]:g} nm "
            f"(voxel_size {voxel_size!r}); FRC needs square pixels: resample the volume to "
            "an isotropic grid first"
        )
    if sector_deg is not None and reference is None:
        raise UserInputError("sector_deg needs a reference volume (two-image FRC)")
    if reference is not None and tuple(reference.shape) != tuple(volume.shape):
        raise UserInputError(
            f"reference shape {tuple(reference.shape)} differs from "
            f"volume shape {tuple(volume.shape)}"
        )
    length = volume.shape[axis]
    plane_shape = tuple(n for a, n in enumerate(volume.shape) if a != axis)
    if length < 1 or min(plane_shape) < 2 * _MIN_SIDE:
        raise UserInputError(
            f"volume has shape {volume.shape}; {orientation} planes need at least "
            f"{2 * _MIN_SIDE} pixels per side and the volume at least one plane (use a larger crop)"
        )
    count = min(length, int(max_planes))
    indices = ((np.arange(count) + 0.5) * length / count).astype(np.intp)
    curves = []
    for index in indices:
        where = [slice(None)] * 3
        where[axis] = int(index)
        plane = np.asarray(volume[tuple(where)])
        if plane.min() == plane.max():
            raise UserInputError(
                f"{orientation} plane {int(index)} of the volume is constant; FRC is "
                "undefined there (crop away padding or empty regions first)"
            )
        if reference is None:
            curves.append(single_image_frc(plane))
        else:
            curves.append(
                fourier_ring_correlation(
                    plane, np.asarray(reference[tuple(where)]), sector_deg=sector_deg
                )
            )
    curve = FRCCurve(
        curves[0].frequencies,
        np.mean([c.correlation for c in curves], axis=0),
        np.sum([c.num_samples for c in curves], axis=0),
    )
    return frc_resolution(curve, pixel_size_nm=in_plane[0], threshold=threshold)
