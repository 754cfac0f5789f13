"""The axial grid: where fine slices and thick sections sit, in one place.

Continuous coordinates: fine slice ``j`` occupies ``[j, j + 1)``. Section ``i``
of a factor-``k`` acquisition covers ``[i k, (i + 1) k)``; its centre, in fine
slice *index* coordinates, is ``(i + 0.5) k - 0.5``. The forward model,
interpolation, the learned methods, the bench and the data-consistency check
all take their arithmetic from ``AxialGrid`` so they never disagree by a
rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from vemrestore.errors import UserInputError

__all__ = ["MAX_SCALE_FACTOR", "AxialGrid", "check_scale_factor"]

MAX_SCALE_FACTOR = 64.0
# Tolerance of the floor/ceil on k * i: keeps e.g. 3 * (1 / 3) * 3 on the right side.
_EPS = 1e-9


def check_scale_factor(scale_factor: float) -> float:
    """``scale_factor`` as a float in ``(1, 64]``; anything else is a user error."""
    k = float(scale_factor)
    if not math.isfinite(k) or k <= 1.0 or k > MAX_SCALE_FACTOR:
        raise UserInputError(
            f"scale factor must be > 1 and <= {MAX_SCALE_FACTOR:g}, got {scale_factor} "
            "(e.g. 50 nm sections restored to 10 nm voxels is factor 5)"
        )
    return k


@dataclass(frozen=True)
class AxialGrid:
    """Fine grid <-> section grid of a factor ``scale_factor`` acquisition.

    Examples
    --------
    >>> grid = AxialGrid(4)
    >>> grid.centres(3).tolist(), grid.num_fine(3), grid.num_sections(13)
    ([1.5, 5.5, 9.5], 12, 3)
    >>> AxialGrid(2.5).first_fine(1), AxialGrid(2.5).fine_at(1)
    (3, 2)
    >>> grid.to_section([1.5, 5.5]).tolist()
    [0.0, 1.0]
    """

    scale_factor: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "scale_factor", check_scale_factor(self.scale_factor))

    def num_fine(self, num_sections: int) -> int:
        """Fine slices restored from ``num_sections`` sections: ``round(n k)``."""
        return round(num_sections * self.scale_factor)

    def num_sections(self, num_fine: int) -> int:
        """Whole sections that fit in ``num_fine`` fine slices."""
        return math.floor(num_fine / self.scale_factor + _EPS)

    def first_fine(self, section: int) -> int:
        """First fine slice whose index is at or after the start of ``section``."""
        return math.ceil(section * self.scale_factor - _EPS)

    def fine_at(self, section: int) -> int:
        """The fine slice in which ``section`` starts."""
        return math.floor(section * self.scale_factor + _EPS)

    def centres(self, num_sections: int, start: int = 0) -> np.ndarray:
        """Centres of sections ``start .. start + num_sections - 1`` in fine index units."""
        ids = np.arange(start, start + num_sections, dtype=np.float64)
        return (ids + 0.5) * self.scale_factor - 0.5

    def to_section(self, fine_index: np.ndarray | list[float]) -> np.ndarray:
        """Position of fine slices in section-index units (section ``i`` sits at ``i``)."""
        return (np.asarray(fine_index, dtype=np.float64) + 0.5) / self.scale_factor - 0.5

    def sections_for(
        self, fine_lo: int, fine_hi: int, *, halo_sections: int, num_sections: int
    ) -> slice:
        """Sections that fine slices ``[fine_lo, fine_hi)`` lie between, plus a halo.

        The range covers the two sections around every fine slice in the
        range and ``halo_sections`` more each side, clipped to the stack.
        """
        u = self.to_section([fine_lo, fine_hi - 1])
        lo = max(0, math.floor(u[0]) - halo_sections)
        hi = min(num_sections, math.ceil(u[1]) + 1 + halo_sections)
        return slice(lo, hi)

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape (Z, Y, X) of the fine volume restored from ``input_shape`` sections."""
        z, y, x = input_shape
        return (self.num_fine(z), y, x)

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """Voxel size (z, y, x) in nm of the fine volume."""
        z, y, x = voxel_size
        return (z / self.scale_factor, y, x)

    def output_translation(
        self, translation: tuple[float, float, float], voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """Position (z, y, x) in nm of fine slice 0's centre, for sections whose first
        centre is at ``translation`` with section voxel size ``voxel_size``.

        Section 0 is centred at fine slice ``(k - 1) / 2``, so the fine grid
        starts that many fine slices before it; the volumes then overlay.

        Examples
        --------
        >>> AxialGrid(8).output_translation((0.0, 5.0, 5.0), (80.0, 10.0, 10.0))
        (-35.0, 5.0, 5.0)
        """
        z, y, x = translation
        fine_z = voxel_size[0] / self.scale_factor
        return (z - 0.5 * (self.scale_factor - 1) * fine_z, y, x)
