"""Robust intensity normalisation computed once per volume.

Learned methods work on intensities scaled so that the ``p_low`` percentile
maps to 0 and the ``p_high`` percentile to 1. The percentiles are computed
once, on a strided subsample of the whole volume, and stored with the trained
model, so every block of a blockwise prediction is scaled the same way.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError

__all__ = ["PercentileNormalization"]

# Voxels read to estimate the percentiles (a strided subsample of the volume).
_MAX_SAMPLES = 2**22


@dataclass(frozen=True)
class PercentileNormalization:
    """Affine map sending the ``low`` intensity to 0 and ``high`` to 1.

    Parameters
    ----------
    low, high : float
        Intensities mapped to 0 and 1 (``high > low``).
    p_low, p_high : float
        The percentiles ``low`` and ``high`` were computed at (provenance).

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    >>> norm = PercentileNormalization.from_data(vol, p_low=0.0, p_high=100.0)
    >>> float(norm.apply(vol).max()), float(norm.invert(norm.apply(vol)).max())
    (1.0, 999.0)
    """

    low: float
    high: float
    p_low: float = 1.0
    p_high: float = 99.8

    def __post_init__(self) -> None:
        if not (np.isfinite(self.low) and np.isfinite(self.high) and self.high > self.low):
            raise UserInputError(
                f"normalisation needs finite low < high, got low={self.low}, high={self.high} "
                "(the volume may be constant or contain NaN/inf)"
            )

    @classmethod
    def from_data(
        cls,
        data: Any,
        *,
        p_low: float = 1.0,
        p_high: float = 99.8,
        max_samples: int = _MAX_SAMPLES,
    ) -> PercentileNormalization:
        """Percentiles of a strided subsample of ``data`` (NumPy or dask, any shape).

        Parameters
        ----------
        data : array-like
            The volume, e.g. shape (Z, Y, X). Dask arrays read only the subsample.
        p_low, p_high : float
            Percentiles in [0, 100] mapped to 0 and 1.
        max_samples : int
            At most about this many voxels are read: each axis is strided evenly.

        Returns
        -------
        PercentileNormalization

        Raises
        ------
        UserInputError
            If the percentiles are out of order or the subsample is constant.
        """
        if not 0.0 <= p_low < p_high <= 100.0:
            raise UserInputError(
                f"percentiles must satisfy 0 <= p_low < p_high <= 100, got p_low={p_low}, "
                f"p_high={p_high}"
            )
        shape = tuple(int(s) for s in data.shape)
        size = int(np.prod(shape))
        stride = max(1, int(np.ceil((size / max_samples) ** (1.0 / max(1, len(shape))))))
        sample = np.asarray(data[(slice(None, None, stride),) * len(shape)], dtype=np.float64)
        low, high = np.percentile(sample, [p_low, p_high])
        if not high > low:
            low, high = float(sample.min()), float(sample.max())
        return cls(low=float(low), high=float(high), p_low=float(p_low), p_high=float(p_high))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """Scale intensities: ``(x - low) / (high - low)`` as float32."""
        scale = np.float32(1.0 / (self.high - self.low))
        return (np.asarray(x, dtype=np.float32) - np.float32(self.low)) * scale

    def invert(self, y: np.ndarray) -> np.ndarray:
        """Undo ``apply``: ``y * (high - low) + low`` as float32."""
        scale = np.float32(self.high - self.low)
        return np.asarray(y, dtype=np.float32) * scale + np.float32(self.low)

    def to_dict(self) -> dict[str, float]:
        """JSON-ready fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PercentileNormalization:
        """Inverse of ``to_dict``; unknown or missing keys raise ``UserInputError``."""
        expected = {"low", "high", "p_low", "p_high"}
        if set(data) != expected:
            raise UserInputError(
                f"normalisation record must have keys {sorted(expected)}, got {sorted(data)} "
                "(the file was not written by PercentileNormalization.to_dict)"
            )
        return cls(**{k: float(v) for k, v in data.items()})
