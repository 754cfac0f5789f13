"""The one in-memory (or lazy) volume type passed between packages."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError

__all__ = ["Volume"]


@dataclass
class Volume:
    """A 3D image with its physical voxel size.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array, shape (Z, Y, X)
        The voxels. Large files are opened as dask arrays and stay lazy.
    voxel_size : tuple of float
        Voxel size in nm as (z, y, x).
    translation : tuple of float
        Physical position in nm (z, y, x) of the centre of voxel (0, 0, 0)
        (OME-NGFF ``translation``), so that volumes overlay in world space.
    axes : str
        Axis names, always ``"ZYX"`` once opened.
    source : str, optional
        Where the data came from (path), for messages and provenance.
    metadata : dict
        Free-form provenance (format, original axes, ...).
    """

    data: Any
    voxel_size: tuple[float, float, float] = (1.0, 1.0, 1.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    axes: str = "ZYX"
    source: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        where = f" in {self.source}" if self.source else ""
        if self.data.ndim != 3:
            raise UserInputError(
                f"expected a 3D volume (Z, Y, X){where}, got shape {tuple(self.data.shape)} "
                "(pass a single-channel 3D image)"
            )
        if min(self.data.shape) == 0:
            raise UserInputError(f"volume{where} is empty: shape {tuple(self.data.shape)}")
        vs = tuple(float(v) for v in self.voxel_size)
        if len(vs) != 3 or not all(np.isfinite(v) and v > 0 for v in vs):
            raise UserInputError(
                f"voxel_size{where} must be three positive numbers (z, y, x) in nm, "
                f"got {self.voxel_size}"
            )
        self.voxel_size = vs  # type: ignore[assignment]
        offset = tuple(float(v) for v in self.translation)
        if len(offset) != 3 or not all(np.isfinite(v) for v in offset):
            raise UserInputError(
                f"translation{where} must be three finite numbers (z, y, x) in nm, "
                f"got {self.translation}"
            )
        self.translation = offset  # type: ignore[assignment]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.data.shape)  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.data.dtype)

    @property
    def is_lazy(self) -> bool:
        return not isinstance(self.data, np.ndarray)

    def to_numpy(self) -> np.ndarray:
        """Load the voxels into memory (computes a dask array)."""
        return np.asarray(self.data)
