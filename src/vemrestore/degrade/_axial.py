"""Axial thick-section sampling: the forward model of anisotropic acquisition.

The geometry (section extents and centres) is ``AxialGrid``'s, which the
restoration methods, the bench and the data-consistency check use too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from vemrestore.degrade._grid import AxialGrid, check_scale_factor
from vemrestore.errors import UserInputError

__all__ = ["AxialSectioning", "SectioningInfo", "section_centres", "sectioning_matrix"]

_FWHM_TO_SIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


def section_centres(num_sections: int, scale_factor: float) -> np.ndarray:
    """Centres of sections ``0..num_sections-1`` in fine slice index coordinates."""
    return AxialGrid(scale_factor).centres(num_sections)


def sectioning_matrix(
    num_fine: int,
    scale_factor: float,
    *,
    profile: Literal["box", "gaussian"] = "box",
    fwhm: float | None = None,
) -> np.ndarray:
    """Weights ``W`` (num_sections, num_fine) with ``sections = W @ fine`` along the axis.

    Parameters
    ----------
    num_fine : int
        Number of fine (isotropic) slices along the axis.
    scale_factor : float
        Section thickness in fine slices; non-integer values are exact
        (partial slices are weighted by their overlap).
    profile : {"box", "gaussian"}
        Box: mean over the section's extent. Gaussian: weights of the given
        FWHM (in fine slices, default ``scale_factor``) around the centre.
    fwhm : float, optional
        Gaussian FWHM in fine slices.

    Returns
    -------
    numpy.ndarray of float64
        Rows sum to one.
    """
    grid = AxialGrid(scale_factor)
    k, m = grid.scale_factor, grid.num_sections(num_fine)
    if m < 1:
        raise UserInputError(
            f"axis of length {num_fine} is shorter than one section of {k:g} slices "
            "(use a smaller factor or a longer volume)"
        )
    j = np.arange(num_fine, dtype=np.float64)
    if profile == "box":
        lo = np.arange(m, dtype=np.float64)[:, None] * k
        overlap = np.clip(np.minimum(j[None, :] + 1, lo + k) - np.maximum(j[None, :], lo), 0, None)
        weights = overlap / k
    elif profile == "gaussian":
        width = k if fwhm is None else float(fwhm)
        if not width > 0:
            raise UserInputError(f"gaussian fwhm must be > 0 slices, got {fwhm}")
        sigma = width * _FWHM_TO_SIGMA
        d = j[None, :] - grid.centres(m)[:, None]
        weights = np.exp(-0.5 * (d / sigma) ** 2)
        weights[np.abs(d) > 4 * sigma] = 0.0
    else:
        raise UserInputError(f"unknown slice profile {profile!r} (choose 'box' or 'gaussian')")
    return weights / weights.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class SectioningInfo:
    """What ``AxialSectioning.apply`` did, to score a restoration exactly.

    Attributes
    ----------
    centres : numpy.ndarray
        Section centres in fine slice index coordinates.
    num_fine : int
        Number of fine slices the restoration should produce (the sections
        cover ``round(num_sections * scale_factor)`` fine slices).
    """

    scale_factor: float
    axis: int
    profile: str
    fwhm: float | None
    centres: np.ndarray
    num_fine: int


@dataclass(frozen=True)
class AxialSectioning:
    """Simulate thick sections along ``axis`` by a factor ``scale_factor``.

    Works on NumPy, dask and torch arrays; the result is float32 (torch keeps
    the input's floating dtype and device).

    Examples
    --------
    >>> import numpy as np
    >>> vol = np.random.default_rng(0).random((16, 8, 8))
    >>> sections, info = AxialSectioning(4).apply(vol)
    >>> sections.shape, info.centres.tolist()
    ((4, 8, 8), [1.5, 5.5, 9.5, 13.5])
    """

    scale_factor: float
    axis: int = 0
    profile: Literal["box", "gaussian"] = "box"
    fwhm: float | None = None

    def __post_init__(self) -> None:
        check_scale_factor(self.scale_factor)

    def matrix(self, num_fine: int) -> np.ndarray:
        return sectioning_matrix(num_fine, self.scale_factor, profile=self.profile, fwhm=self.fwhm)

    def apply(self, x: Any) -> tuple[Any, SectioningInfo]:
        n = int(x.shape[self.axis])
        weights = self.matrix(n)
        m = weights.shape[0]
        grid = AxialGrid(self.scale_factor)
        info = SectioningInfo(
            scale_factor=float(self.scale_factor),
            axis=self.axis,
            profile=self.profile,
            fwhm=self.fwhm,
            centres=grid.centres(m),
            num_fine=grid.num_fine(m),
        )
        return _apply_along_axis(weights, x, self.axis), info


def _apply_along_axis(weights: np.ndarray, x: Any, axis: int) -> Any:
    if type(x).__module__.startswith("torch"):
        import torch

        dtype = x.dtype if x.dtype.is_floating_point else torch.float32
        w = torch.as_tensor(weights, dtype=dtype, device=x.device)
        y = torch.tensordot(w, torch.movedim(x.to(dtype), axis, 0), dims=1)
        return torch.movedim(y, 0, axis)
    if type(x).__module__.startswith("dask"):
        import dask.array as da

        moved = da.moveaxis(x.astype(np.float32), axis, 0)
        y = da.tensordot(weights.astype(np.float32), moved, axes=1)
        return da.moveaxis(y, 0, axis)
    moved = np.moveaxis(np.asarray(x, dtype=np.float32), axis, 0)
    y = np.tensordot(weights.astype(np.float32), moved, axes=1)
    return np.moveaxis(y, 0, axis).astype(np.float32, copy=False)
