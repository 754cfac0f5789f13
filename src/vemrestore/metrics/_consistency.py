"""Data consistency: does a restoration, degraded again, reproduce what was observed?"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.metrics._image import as_real_array, peak_signal_noise_ratio

__all__ = ["data_consistency_psnr"]


def data_consistency_psnr(
    observed: Any,
    restored: Any,
    forward: Callable[[np.ndarray], Any] | Any,
    *,
    data_range: float,
) -> float:
    """PSNR (dB) of the observed data against the restoration put through the forward model.

    Needs no ground truth: a restoration that the forward model maps back
    onto the observation scores high; one that invents or loses content
    that the microscope would have seen scores low. It cannot catch content
    the forward model removes (e.g. detail within a section), so read it
    with a reference-based score.

    The forward model may give one section more or fewer than observed
    along an axis (e.g. a restoration covering ``round(m * k)`` fine slices
    for a non-integer factor ``k``). Both arrays are then cropped to their
    common shape from the start, so the first common sections are compared.

    Parameters
    ----------
    observed : array_like, shape (Z, Y, X)
        What was acquired, e.g. thick sections.
    restored : array_like
        The restoration, on the grid the forward model expects.
    forward : callable or object with ``apply``
        Either a function ``restored -> predicted observation``, or a
        degradation object such as :class:`vemrestore.degrade.AxialSectioning`
        whose ``apply(x)`` returns ``(predicted, info)``.
    data_range : float
        Span of possible intensities of ``observed`` (e.g. 255 for 8-bit
        data); required because the forward model returns floats.

    Returns
    -------
    float
        PSNR in dB; ``inf`` when the prediction equals the observation.

    Raises
    ------
    UserInputError
        The prediction and ``observed`` differ in dimensionality or by more
        than one element along any axis, or ``data_range`` is not positive.

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.degrade import AxialSectioning
    >>> fine = np.random.default_rng(0).random((16, 8, 8), dtype=np.float32)
    >>> sectioning = AxialSectioning(4)
    >>> sections, _ = sectioning.apply(fine)
    >>> data_consistency_psnr(sections, fine, sectioning, data_range=1.0)
    inf
    """
    if hasattr(forward, "apply"):
        predicted = forward.apply(restored)[0]
    elif callable(forward):
        predicted = forward(restored)
    else:
        raise UserInputError(
            f"forward must be a callable or have an apply method, got {type(forward).__name__} "
            "(pass e.g. vemrestore.degrade.AxialSectioning(k))"
        )
    observed = as_real_array(observed, name="observed", ndims=(2, 3))
    predicted = as_real_array(predicted, name="forward(restored)", ndims=(observed.ndim,))
    pairs = list(zip(observed.shape, predicted.shape, strict=True))
    if any(abs(a - b) > 1 for a, b in pairs):
        raise UserInputError(
            f"forward(restored) has shape {predicted.shape} but observed has shape "
            f"{observed.shape}; they may differ by at most one section per axis "
            "(check the restoration's grid and the forward model's factor)"
        )
    common = tuple(slice(0, min(pair)) for pair in pairs)
    return peak_signal_noise_ratio(observed[common], predicted[common], data_range=data_range)
