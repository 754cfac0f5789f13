"""Section loss and section damage along Z, with exact masks of what changed.

Both models take a ``(Z, Y, X)`` NumPy volume, never modify it, and return a
float32 copy plus an info object; randomness comes from ``rng`` (put through
``np.random.default_rng``), so the same seed gives the same damage. Randomly
chosen slices are never the first or the last one, so a restoration always
has a neighbour on each side.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from vemrestore.errors import UserInputError

__all__ = ["DamageInfo", "MissingSlices", "MissingSlicesInfo", "SliceDamage"]

DAMAGE_KINDS = ("crack", "fold", "blob", "contrast")
MIN_SLICE_SIZE = 16


def _as_volume(volume: Any) -> np.ndarray:
    data = np.array(volume, dtype=np.float32, copy=True)
    if data.ndim != 3 or data.size == 0:
        raise UserInputError(
            f"expected a non-empty (Z, Y, X) volume, got shape {data.shape} "
            "(stack 2D images along a first axis)"
        )
    return data


def _interior_groups(
    num_slices: int, count: int, length: int, rng: np.random.Generator
) -> list[int]:
    """Start indices of ``count`` runs of ``length`` slices inside ``1 .. num_slices - 2``.

    Runs are separated by at least one kept slice, and every placement is
    equally likely (choose the free slices before each run without replacement).
    """
    interior = num_slices - 2
    free = interior - count * length - (count - 1)
    if free < 0:
        raise UserInputError(
            f"cannot place count={count} runs of consecutive={length} missing slices, "
            f"separated by kept slices, inside the {max(interior, 0)} interior slices of a "
            f"volume with Z={num_slices} (lower count or consecutive)"
        )
    picks = np.sort(rng.choice(free + count, size=count, replace=False))
    return [1 + int(p) + j * length for j, p in enumerate(picks)]


@dataclass(frozen=True)
class MissingSlicesInfo:
    """What ``MissingSlices.apply`` removed.

    Attributes
    ----------
    indices : tuple of int
        Sorted indices of the missing slices.
    mask : numpy.ndarray of bool, shape (Z,)
        True where a slice is missing.
    fill : str
        How the missing slices were filled.
    """

    indices: tuple[int, ...]
    mask: np.ndarray = field(repr=False)
    fill: str


@dataclass(frozen=True)
class MissingSlices:
    """Blank whole Z slices: given ``indices``, or random runs of ``consecutive`` slices.

    Parameters
    ----------
    indices : sequence of int, optional
        Slices to remove (any of ``0 .. Z-1``). When given, ``count`` and
        ``consecutive`` must keep their defaults.
    count : int
        Number of random runs to remove (when ``indices`` is None).
    consecutive : int
        Length of each random run. Runs never touch the first or last slice
        and are separated by at least one kept slice.
    fill : {"zero", "mean", "nan"}
        Value of a missing slice: 0, the mean of the input volume, or NaN.

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.ones((10, 16, 16), dtype=np.uint8)
    >>> damaged, info = MissingSlices(count=2, consecutive=2).apply(volume, rng=0)
    >>> damaged.dtype, len(info.indices), int(info.mask.sum())
    (dtype('float32'), 4, 4)
    """

    indices: Sequence[int] | None = None
    count: int = 1
    consecutive: int = 1
    fill: Literal["zero", "mean", "nan"] = "zero"

    def __post_init__(self) -> None:
        if self.fill not in ("zero", "mean", "nan"):
            raise UserInputError(f"unknown fill {self.fill!r} (choose 'zero', 'mean' or 'nan')")
        if self.indices is not None:
            if self.count != 1 or self.consecutive != 1:
                raise UserInputError(
                    "give either indices or count/consecutive for missing slices, not both "
                    f"(got indices={list(self.indices)}, count={self.count}, "
                    f"consecutive={self.consecutive})"
                )
            if len(self.indices) == 0 or len(set(self.indices)) != len(self.indices):
                raise UserInputError(
                    f"missing slice indices must be non-empty and distinct, got "
                    f"{list(self.indices)}"
                )
        if self.count < 1 or self.consecutive < 1:
            raise UserInputError(
                f"count and consecutive must be >= 1, got count={self.count}, "
                f"consecutive={self.consecutive}"
            )

    def apply(self, volume: Any, *, rng: Any = None) -> tuple[np.ndarray, MissingSlicesInfo]:
        """Blank the missing slices of a copy of ``volume``.

        Parameters
        ----------
        volume : numpy.ndarray, shape (Z, Y, X)
            Left unchanged.
        rng : int or numpy.random.Generator, optional
            Chooses random runs (unused with explicit ``indices``).

        Returns
        -------
        damaged : numpy.ndarray of float32, shape (Z, Y, X)
        info : MissingSlicesInfo

        Raises
        ------
        UserInputError
            If the volume is not 3D, an index is outside ``0..Z-1``, or the
            runs do not fit between the first and last slice.
        """
        data = _as_volume(volume)
        num_slices = data.shape[0]
        if self.indices is None:
            starts = _interior_groups(
                num_slices, self.count, self.consecutive, np.random.default_rng(rng)
            )
            indices = tuple(s + i for s in starts for i in range(self.consecutive))
        else:
            indices = tuple(sorted(int(i) for i in self.indices))
            if indices[0] < 0 or indices[-1] >= num_slices:
                raise UserInputError(
                    f"missing slice indices {list(indices)} are outside 0..{num_slices - 1} "
                    f"(the volume has Z={num_slices})"
                )
        mask = np.zeros(num_slices, dtype=bool)
        mask[list(indices)] = True
        value = {"zero": 0.0, "mean": float(data.mean(dtype=np.float64)), "nan": np.nan}
        data[mask] = value[self.fill]
        return data, MissingSlicesInfo(indices=indices, mask=mask, fill=self.fill)


@dataclass(frozen=True)
class DamageInfo:
    """What ``SliceDamage.apply`` altered.

    Attributes
    ----------
    mask : numpy.ndarray of bool, shape (Z, Y, X)
        True exactly on the voxels that were rewritten; every other voxel
        equals the input (as float32).
    damaged : tuple of (int, str)
        ``(slice, kind)`` for each damaged slice, sorted by slice.
    """

    mask: np.ndarray = field(repr=False)
    damaged: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class SliceDamage:
    """Damage parts of ``count`` random slices, one damage kind per slice.

    Kinds (percentiles are of the damaged slice):

    - ``"crack"``: a random curved line 2-6 px wide set to the 1st or 99th
      percentile (dark or bright).
    - ``"fold"``: a straight band 10-30 px wide (at most half the slice) across
      the slice; the content of a 1.5-3x wider strip is squeezed into it and
      darkened toward the 1st percentile (kept fraction 0.3-0.6).
    - ``"blob"``: 1-4 filled random ellipses (dust) of dark values between the
      minimum and the 1st percentile.
    - ``"contrast"``: an ellipse (or, half of the time, the whole slice) whose
      intensities are scaled toward their mean by 0.3-0.6.

    Parameters
    ----------
    kinds : sequence of str
        Kinds to draw from, uniformly, for each damaged slice.
    count : int
        Number of damaged slices: distinct, never the first or last slice.

    Examples
    --------
    >>> import numpy as np
    >>> volume = np.random.default_rng(0).random((8, 32, 32)).astype(np.float32)
    >>> damaged, info = SliceDamage(kinds=("blob",), count=2).apply(volume, rng=1)
    >>> bool((damaged[~info.mask] == volume[~info.mask]).all()), len(info.damaged)
    (True, 2)
    """

    kinds: Sequence[str] = DAMAGE_KINDS
    count: int = 1

    def __post_init__(self) -> None:
        unknown = [k for k in self.kinds if k not in DAMAGE_KINDS]
        if not self.kinds or unknown:
            raise UserInputError(
                f"damage kinds must be a non-empty selection of {list(DAMAGE_KINDS)}, "
                f"got {list(self.kinds)}"
            )
        if self.count < 1:
            raise UserInputError(f"damage count must be >= 1, got {self.count}")

    def apply(self, volume: Any, *, rng: Any = None) -> tuple[np.ndarray, DamageInfo]:
        """Damage ``count`` slices of a copy of ``volume``.

        Parameters
        ----------
        volume : numpy.ndarray, shape (Z, Y, X)
            Left unchanged: the damage is applied to a float32 copy, returned
            with the exact masks of what was done.
        rng : int or numpy.random.Generator, optional
            Chooses slices, kinds and shapes.

        Returns
        -------
        damaged, info : numpy.ndarray of float32 (Z, Y, X), DamageInfo

        Raises
        ------
        UserInputError
            If the volume is not 3D, has fewer than ``count + 2`` slices, or
            slices smaller than 16 x 16.
        """
        data = _as_volume(volume)
        num_slices, height, width = data.shape
        if num_slices - 2 < self.count:
            raise UserInputError(
                f"cannot damage count={self.count} slices: a volume with Z={num_slices} has "
                f"{max(num_slices - 2, 0)} interior slices (lower count)"
            )
        if min(height, width) < MIN_SLICE_SIZE:
            raise UserInputError(
                f"slice damage needs slices of at least {MIN_SLICE_SIZE}x{MIN_SLICE_SIZE} px, "
                f"got {height}x{width}"
            )
        rng = np.random.default_rng(rng)
        chosen = np.sort(rng.choice(np.arange(1, num_slices - 1), size=self.count, replace=False))
        mask = np.zeros(data.shape, dtype=bool)
        damaged = []
        for z in chosen.tolist():
            kind = str(self.kinds[rng.integers(len(self.kinds))])
            region, values = _DAMAGE[kind](data[z], rng)
            data[z][region] = values[region]
            mask[z] = region
            damaged.append((z, kind))
        return data, DamageInfo(mask=mask, damaged=tuple(damaged))


def _crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape
    # A random walk with a slowly turning heading, from one border across the slice.
    if rng.random() < 0.5:
        y, x, heading = 0.0, rng.uniform(0.1, 0.9) * (width - 1), math.pi / 2
    else:
        y, x, heading = rng.uniform(0.1, 0.9) * (height - 1), 0.0, 0.0
    heading += rng.uniform(-math.pi / 6, math.pi / 6)
    path = np.zeros(image.shape, dtype=bool)
    turn = 0.0
    for _ in range(4 * (height + width)):
        if not (0 <= y <= height - 1 and 0 <= x <= width - 1):
            break
        path[round(y), round(x)] = True
        turn = 0.9 * turn + rng.normal(0.0, 0.01)
        heading += turn
        y += math.sin(heading)
        x += math.cos(heading)
    radius = rng.uniform(1.0, 3.0)  # width 2-6 px
    region = ndimage.distance_transform_edt(~path) <= radius
    low, high = np.percentile(image, [1, 99])
    value = low if rng.random() < 0.5 else high
    return region, np.full(image.shape, value, dtype=np.float32)


def _fold(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    height, width = image.shape
    band = min(rng.uniform(10, 30), min(height, width) / 2)
    angle = rng.uniform(0, math.pi)
    normal = np.array([math.cos(angle), math.sin(angle)])  # (dy, dx)
    centre = np.array([rng.uniform(0.25, 0.75) * height, rng.uniform(0.25, 0.75) * width])
    yy, xx = np.mgrid[:height, :width].astype(np.float32)
    distance = (yy - centre[0]) * normal[0] + (xx - centre[1]) * normal[1]
    region = np.abs(distance) <= band / 2
    # Squeeze: the band shows the strip |d| <= squeeze * band / 2 around the fold line.
    shift = (rng.uniform(1.5, 3.0) - 1.0) * distance
    coords = np.stack([yy + shift * normal[0], xx + shift * normal[1]])
    squeezed = ndimage.map_coordinates(image, coords, order=1, mode="reflect")
    low = np.float32(np.percentile(image, 1))
    keep = np.float32(rng.uniform(0.3, 0.6))
    return region, (low + (squeezed - low) * keep).astype(np.float32)


def _random_ellipse(
    shape: tuple[int, int], radii: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    height, width = shape
    cy, cx = rng.uniform(0, height), rng.uniform(0, width)
    a, b = rng.uniform(*radii, size=2)
    angle = rng.uniform(0, math.pi)
    yy, xx = np.mgrid[:height, :width]
    u = (yy - cy) * math.cos(angle) + (xx - cx) * math.sin(angle)
    v = -(yy - cy) * math.sin(angle) + (xx - cx) * math.cos(angle)
    return (u / a) ** 2 + (v / b) ** 2 <= 1.0


def _blob(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    size = min(image.shape)
    radii = (max(2.0, 0.03 * size), max(3.0, 0.12 * size))
    region = np.zeros(image.shape, dtype=bool)
    values = np.empty(image.shape, dtype=np.float32)
    darkest, low = image.min(), np.percentile(image, 1)
    for _ in range(rng.integers(1, 5)):
        ellipse = _random_ellipse(image.shape, radii, rng)
        values[ellipse] = rng.uniform(darkest, low) if low > darkest else darkest
        region |= ellipse
    return region, values


def _contrast(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    if rng.random() < 0.5:
        region = np.ones(image.shape, dtype=bool)
    else:
        size = min(image.shape)
        region = _random_ellipse(image.shape, (0.2 * size, 0.5 * size), rng)
    mean = np.float32(image[region].mean())
    factor = np.float32(rng.uniform(0.3, 0.6))
    return region, (mean + (image - mean) * factor).astype(np.float32)


_DAMAGE = {"crack": _crack, "fold": _fold, "blob": _blob, "contrast": _contrast}
