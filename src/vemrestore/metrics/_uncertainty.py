"""Does an uncertainty map tell where a restoration is wrong? Rank correlation with the error."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats

from vemrestore.errors import UserInputError
from vemrestore.metrics._image import check_pair

__all__ = ["uncertainty_error_correlation"]


def uncertainty_error_correlation(
    uncertainty: Any,
    restored: Any,
    truth: Any,
    *,
    max_voxels: int = 1_000_000,
    seed: int = 0,
) -> float:
    """Spearman correlation between an uncertainty map and the absolute error.

    A rank correlation, so the map needs no calibration (a standard deviation,
    a variance or any monotone score gives the same value): 1 when the voxels
    the map ranks most uncertain are exactly those with the largest
    ``|restored - truth|``, 0 for a map unrelated to the error (white noise).

    Parameters
    ----------
    uncertainty, restored, truth : array-like
        Arrays of one shape (2D or 3D).
    max_voxels : int
        Voxels scored at most: a fixed random subset of that size beyond it
        (the ranks of a few million voxels are costly and change little).
    seed : int
        Seed of that subset.

    Returns
    -------
    float
        Spearman's rho in [-1, 1]; NaN when the map or the error is constant.

    Raises
    ------
    UserInputError
        If the shapes differ or an array is not a real 2D/3D array.

    Examples
    --------
    >>> truth = np.zeros((8, 8))
    >>> restored = np.linspace(0, 1, 64).reshape(8, 8)
    >>> round(uncertainty_error_correlation(restored * 2, restored, truth), 6)
    1.0
    """
    if max_voxels < 2:
        raise UserInputError(f"max_voxels must be at least 2, got {max_voxels}")
    std, restored = check_pair(uncertainty, restored, names=("uncertainty", "restored"))
    restored, reference = check_pair(restored, truth, names=("restored", "truth"))
    std = std.ravel()
    error = np.abs(restored.astype(np.float64) - reference).ravel()
    if std.size > max_voxels:
        keep = np.random.default_rng(seed).choice(std.size, size=max_voxels, replace=False)
        std, error = std[keep], error[keep]
    if np.ptp(std) == 0 or np.ptp(error) == 0:
        return float("nan")
    return float(stats.spearmanr(std, error).statistic)
