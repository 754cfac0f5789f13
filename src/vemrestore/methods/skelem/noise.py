"""Position-keyed sampling noise, sample statistics and data consistency of SkelEM."""

from __future__ import annotations

import math

import numpy as np

from vemrestore.degrade._axial import sectioning_matrix
from vemrestore.degrade._grid import AxialGrid

__all__ = ["Moments", "consistency_correction", "keyed_normal", "local_sectioning"]


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser (Steele et al. 2014) on uint64 arrays, wrapping."""
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def keyed_normal(
    seed: int,
    sample_index: int,
    orientation: int,
    planes: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
) -> np.ndarray:
    """Standard normal noise that is a fixed function of its key and position.

    A counter-based generator: each value hashes (splitmix64) the seed, the
    sample index, the orientation and the absolute coordinates of its voxel,
    so any block of a volume draws exactly the noise the whole volume would.

    Parameters
    ----------
    seed, sample_index, orientation : int
        Non-negative keys.
    planes, rows, cols : numpy.ndarray of int, shapes (P,), (H,), (W,)
        Absolute, non-negative coordinates of the planes and their pixels.

    Returns
    -------
    numpy.ndarray of float32, shape (P, 1, H, W)

    Examples
    --------
    >>> a = keyed_normal(0, 0, 0, np.arange(4), np.arange(8), np.arange(8))
    >>> b = keyed_normal(0, 0, 0, np.arange(2, 4), np.arange(3, 8), np.arange(8))
    >>> bool(np.array_equal(a[2:, :, 3:], b)), a.shape
    (True, (4, 1, 8, 8))
    """
    with np.errstate(over="ignore"):
        key = np.array([seed, sample_index, orientation], dtype=np.uint64)
        h = _splitmix64(key[:1])
        for part in key[1:]:
            h = _splitmix64(h ^ part)
        h = _splitmix64(h ^ np.asarray(planes, dtype=np.uint64)[:, None, None])
        h = _splitmix64(h ^ np.asarray(rows, dtype=np.uint64)[None, :, None])
        h = _splitmix64(h ^ np.asarray(cols, dtype=np.uint64)[None, None, :])
        g = _splitmix64(h)
    u1 = ((h >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53
    u2 = (g >> np.uint64(11)).astype(np.float64) * 2.0**-53
    normal = np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)
    return normal.astype(np.float32)[:, None]


def local_sectioning(
    grid: AxialGrid,
    profile: str,
    *,
    fine_start: int,
    fine_stop: int,
    section_start: int,
    num_sections: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of the forward model for sections lying wholly inside a fine window.

    Returns the matrix (S, fine_stop - fine_start) over the window's slices
    and the indices (S,), relative to ``section_start``, of those sections.
    Gaussian rows are taken from a matrix extended past the window, so a row
    cut by the window's end is never mistaken for a complete one.

    Examples
    --------
    >>> weights, inside = local_sectioning(
    ...     AxialGrid(4), "box", fine_start=2, fine_stop=12, section_start=0, num_sections=3)
    >>> weights.shape, inside.tolist()
    ((2, 10), [1, 2])
    """
    k = grid.scale_factor
    pad = math.ceil(k) + (math.ceil(2 * k) + 1 if profile == "gaussian" else 0)
    total = max(grid.num_fine(section_start + num_sections) + pad, fine_stop)
    weights = sectioning_matrix(total, k, profile=profile)  # type: ignore[arg-type]
    rows = weights[section_start : section_start + num_sections]
    outside = rows[:, :fine_start].sum(axis=1) + rows[:, fine_stop:].sum(axis=1)
    inside = np.flatnonzero(outside == 0)
    return rows[inside, fine_start:fine_stop], inside


def consistency_correction(
    estimate: np.ndarray, observed: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """Smallest change along axis 0 that makes ``weights @ estimate`` equal ``observed``.

    ``W^T (W W^T)^{-1} (observed - W estimate)``: the orthogonal projection
    onto the volumes consistent with the observation. For a box profile with
    an integer factor it adds each section's residual to its own slices.

    Parameters
    ----------
    estimate : numpy.ndarray, shape (F, ...)
        Fine slices.
    observed : numpy.ndarray, shape (S, ...)
        Observed sections.
    weights : numpy.ndarray, shape (S, F)
        Forward model rows (each section's weights over the fine slices).

    Returns
    -------
    numpy.ndarray of float32, shape (F, ...)

    Examples
    --------
    >>> from vemrestore.degrade import sectioning_matrix
    >>> w = sectioning_matrix(8, 4)
    >>> fix = consistency_correction(np.zeros((8, 1)), np.array([[1.0], [2.0]]), w)
    >>> fix[:, 0].tolist()
    [1.0, 1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 2.0]
    """
    num, rest = estimate.shape[0], estimate.shape[1:]
    if weights.shape[0] == 0:
        return np.zeros_like(estimate, dtype=np.float32)
    flat = estimate.reshape(num, -1).astype(np.float64)
    residual = observed.reshape(weights.shape[0], -1) - weights @ flat
    multipliers = np.linalg.solve(weights @ weights.T, residual)
    return (weights.T @ multipliers).astype(np.float32).reshape(num, *rest)


class Moments:
    """Running mean and standard deviation (Welford) of equally shaped arrays.

    Examples
    --------
    >>> moments = Moments()
    >>> for x in (np.array([1.0]), np.array([3.0])):
    ...     moments.add(x)
    >>> moments.mean.tolist(), moments.std().tolist()
    ([2.0], [1.4142135381698608])
    """

    def __init__(self) -> None:
        self.count = 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, x: np.ndarray) -> None:
        self.count += 1
        if self.mean is None:
            self.mean, self.m2 = x.astype(np.float64), np.zeros(x.shape)
            return
        delta = x - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (x - self.mean)  # type: ignore[operator]

    def std(self) -> np.ndarray:
        """Sample standard deviation (ddof 1); zeros for a single sample."""
        if self.count < 2:
            return np.zeros_like(self.mean, dtype=np.float32)
        return np.sqrt(self.m2 / (self.count - 1)).astype(np.float32)  # type: ignore[operator]
