"""Reference-based image quality: PSNR and SSIM, for volumes and per orientation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from skimage import metrics as sk_metrics

from vemrestore.errors import UserInputError

__all__ = ["orientation_scores", "peak_signal_noise_ratio", "structural_similarity"]

# Wang et al. (2004): Gaussian window sigma 1.5, truncated at 3.5 sigma (11 pixels wide).
_SSIM_SIGMA = 1.5
_SSIM_TRUNCATE = 3.5
_SSIM_WIN = 2 * int(_SSIM_TRUNCATE * _SSIM_SIGMA + 0.5) + 1

# orientation name -> axis that indexes the planes of a (Z, Y, X) volume
PLANE_AXIS = {"xy": 0, "xz": 1, "yz": 2}


def as_real_array(value: Any, *, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """``value`` as a NumPy array of integer or floating dtype with ``ndim`` in ``ndims``."""
    arr = np.asarray(value)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise UserInputError(
            f"{name} has dtype {arr.dtype}; expected integer or floating-point "
            "intensities (convert the image to a real numeric dtype first)"
        )
    if arr.ndim not in ndims:
        dims = " or ".join(f"{d}D" for d in ndims)
        raise UserInputError(f"{name} has shape {arr.shape} ({arr.ndim}D); expected a {dims} array")
    return arr


def check_pair(
    reference: Any,
    test: Any,
    *,
    names: tuple[str, str] = ("reference", "test"),
    ndims: tuple[int, ...] = (2, 3),
) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as real-valued NumPy arrays of one shape, with ``ndim`` in ``ndims``."""
    first = as_real_array(reference, name=names[0], ndims=ndims)
    second = as_real_array(test, name=names[1], ndims=ndims)
    if first.shape != second.shape:
        raise UserInputError(
            f"{names[0]} shape {first.shape} differs from {names[1]} shape "
            f"{second.shape} (crop or resample them to the same grid first)"
        )
    return first, second


def resolve_data_range(reference: np.ndarray, test: np.ndarray, data_range: float | None) -> float:
    """The intensity span for PSNR/SSIM: given, or the range of a shared integer dtype."""
    if data_range is None:
        dtype = reference.dtype
        if np.issubdtype(dtype, np.integer) and test.dtype == dtype:
            info = np.iinfo(dtype)
            return float(info.max) - float(info.min)
        raise UserInputError(
            f"data_range is required for inputs of dtypes {reference.dtype} and {test.dtype} "
            "(only two arrays of the same integer dtype default to that dtype's range); "
            "pass the intensity span, e.g. data_range=255 for 8-bit EM scaled to float"
        )
    value = float(data_range)
    if not (math.isfinite(value) and value > 0):
        raise UserInputError(
            f"data_range must be a finite number > 0, got {data_range!r} "
            "(use the span of possible intensities, e.g. 255 for 8-bit data)"
        )
    return value


def _float_pair(reference: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays in float32, or float64 when either input already is."""
    dtype = np.result_type(reference.dtype, test.dtype, np.float32)
    if dtype != np.float64:
        dtype = np.float32
    return reference.astype(dtype, copy=False), test.astype(dtype, copy=False)


def _psnr_from_mse(mse: np.ndarray | float, data_range: float) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(data_range**2 / np.asarray(mse, dtype=np.float64))


def _check_ssim_size(shape: tuple[int, ...]) -> None:
    if min(shape) < _SSIM_WIN:
        raise UserInputError(
            f"reference has shape {shape}; SSIM's Gaussian window needs at least {_SSIM_WIN} "
            "pixels along every axis (use a larger crop)"
        )


def peak_signal_noise_ratio(reference: Any, test: Any, *, data_range: float | None = None) -> float:
    """Peak signal-to-noise ratio of ``test`` against ``reference``, in dB.

    ``PSNR = 10 log10(data_range**2 / MSE)``, the mean squared error taken
    over all voxels (accumulated in float64; the difference is formed in
    float32, or float64 for float64 input).

    Parameters
    ----------
    reference : array_like, shape (Z, Y, X) or (Y, X)
        Ground truth.
    test : array_like, same shape as ``reference``
        Image to score.
    data_range : float, optional
        Span of possible intensities (e.g. 255 for 8-bit data). Required
        unless both inputs share one integer dtype, whose full range is then
        used (255 for uint8), as in scikit-image.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the arrays are identical.

    Raises
    ------
    UserInputError
        Shapes differ, inputs are not 2D/3D real arrays, or ``data_range``
        is missing for floating-point input or not a positive number.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.zeros((4, 4, 4), dtype=np.float32)
    >>> round(peak_signal_noise_ratio(ref, ref + 0.1, data_range=1.0), 3)
    20.0
    """
    ref, tst = check_pair(reference, test)
    value = resolve_data_range(ref, tst, data_range)
    ref, tst = _float_pair(ref, tst)
    mse = np.mean(np.square(ref - tst), dtype=np.float64)
    return float(_psnr_from_mse(mse, value))


def structural_similarity(reference: Any, test: Any, *, data_range: float | None = None) -> float:
    """Mean structural similarity (SSIM) of ``test`` against ``reference``.

    Uses :func:`skimage.metrics.structural_similarity` with the settings of
    Wang et al. (2004): Gaussian weights with ``sigma=1.5`` (an 11-voxel
    window), population covariance (``use_sample_covariance=False``),
    ``K1=0.01``, ``K2=0.03``. A 3D input gets a 3D Gaussian window; the mean
    leaves out the 5-voxel border where the window is incomplete. Computed in
    float32 (float64 for float64 input).

    Parameters
    ----------
    reference : array_like, shape (Z, Y, X) or (Y, X)
        Ground truth; at least 11 voxels along every axis.
    test : array_like, same shape as ``reference``
        Image to score.
    data_range : float, optional
        Span of possible intensities. Required unless both inputs share one
        integer dtype, whose full range is then used.

    Returns
    -------
    float
        Mean SSIM, 1.0 for identical arrays.

    Raises
    ------
    UserInputError
        Shapes differ, an axis is shorter than the window, or ``data_range``
        is missing for floating-point input.

    References
    ----------
    Wang, Z., Bovik, A. C., Sheikh, H. R. & Simoncelli, E. P. Image quality
    assessment: from error visibility to structural similarity. IEEE Trans.
    Image Process. 13, 600-612 (2004). :doi:`10.1109/TIP.2003.819861`

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).random((16, 16, 16), dtype=np.float32)
    >>> structural_similarity(ref, ref, data_range=1.0)
    1.0
    """
    ref, tst = check_pair(reference, test)
    value = resolve_data_range(ref, tst, data_range)
    _check_ssim_size(ref.shape)
    ref, tst = _float_pair(ref, tst)
    return float(_skimage_ssim(ref, tst, value))


def _skimage_ssim(
    reference: np.ndarray, test: np.ndarray, data_range: float, channel_axis: int | None = None
) -> float:
    return sk_metrics.structural_similarity(
        reference,
        test,
        data_range=data_range,
        gaussian_weights=True,
        sigma=_SSIM_SIGMA,
        truncate=_SSIM_TRUNCATE,
        use_sample_covariance=False,
        channel_axis=channel_axis,
    )


def orientation_scores(
    reference: Any, test: Any, *, data_range: float | None = None
) -> dict[str, float]:
    """Mean 2D PSNR and SSIM over all XY, XZ and YZ planes of a volume.

    The plane ``volume[z]`` is XY, ``volume[:, y]`` is XZ and
    ``volume[:, :, x]`` is YZ. Scoring each orientation separately shows
    whether a restoration is as good across sections (XZ, YZ) as within
    them (XY).

    ``psnr_<o>`` is the mean over the planes of orientation ``<o>`` of each
    plane's own PSNR. (The PSNR of the pooled MSE would be the same number
    for all three orientations.) A plane reproduced exactly has PSNR ``inf``
    and makes the mean ``inf``: for slice inpainting, where observed slices
    are copied through, score only the restored planes. ``ssim_<o>`` is the
    mean over the planes of 2D SSIM with the settings of
    :func:`structural_similarity` (Gaussian ``sigma=1.5``, population
    covariance), computed by scikit-image with the plane axis as channel axis.

    Parameters
    ----------
    reference : array_like, shape (Z, Y, X)
        Ground truth; at least 11 voxels along every axis.
    test : array_like, shape (Z, Y, X)
        Volume to score.
    data_range : float, optional
        Span of possible intensities; required unless both inputs share one
        integer dtype.

    Returns
    -------
    dict of str to float
        Keys ``psnr_xy``, ``psnr_xz``, ``psnr_yz`` (dB) and ``ssim_xy``,
        ``ssim_xz``, ``ssim_yz``.

    Raises
    ------
    UserInputError
        Inputs are not 3D arrays of one shape, an axis is shorter than the
        SSIM window, or ``data_range`` is missing for floating-point input.

    Examples
    --------
    >>> import numpy as np
    >>> ref = np.random.default_rng(0).random((12, 12, 12), dtype=np.float32)
    >>> scores = orientation_scores(ref, ref + 0.01, data_range=1.0)
    >>> round(scores["psnr_xz"], 3), scores["ssim_xy"] > 0.99
    (40.0, True)
    """
    ref, tst = check_pair(reference, test, ndims=(3,))
    value = resolve_data_range(ref, tst, data_range)
    _check_ssim_size(ref.shape)
    ref, tst = _float_pair(ref, tst)
    squared = np.square(ref - tst)
    scores = {}
    for name, axis in PLANE_AXIS.items():
        in_plane = tuple(a for a in range(3) if a != axis)
        mse = np.mean(squared, axis=in_plane, dtype=np.float64)
        scores[f"psnr_{name}"] = float(np.mean(_psnr_from_mse(mse, value)))
    for name, axis in PLANE_AXIS.items():
        scores[f"ssim_{name}"] = float(_skimage_ssim(ref, tst, value, channel_axis=axis))
    return scores
