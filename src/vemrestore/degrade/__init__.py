"""Forward models of the microscope (no torch needed; torch tensors accepted)."""

from vemrestore.degrade._axial import (
    AxialSectioning,
    SectioningInfo,
    section_centres,
    sectioning_matrix,
)
from vemrestore.degrade._damage import DamageInfo, MissingSlices, MissingSlicesInfo, SliceDamage
from vemrestore.degrade._grid import MAX_SCALE_FACTOR, AxialGrid, check_scale_factor
from vemrestore.degrade._lateral import LateralDegradation, LateralInfo
from vemrestore.degrade._noise import (
    NoiseEstimate,
    NoiseInfo,
    PoissonGaussianNoise,
    estimate_poisson_gaussian,
)

__all__ = [
    "MAX_SCALE_FACTOR",
    "AxialGrid",
    "AxialSectioning",
    "DamageInfo",
    "LateralDegradation",
    "LateralInfo",
    "MissingSlices",
    "MissingSlicesInfo",
    "NoiseEstimate",
    "NoiseInfo",
    "PoissonGaussianNoise",
    "SectioningInfo",
    "SliceDamage",
    "check_scale_factor",
    "estimate_poisson_gaussian",
    "section_centres",
    "sectioning_matrix",
]
