"""Forward models of the microscope (no torch needed; torch tensors accepted)."""

from vemrestore.degrade._axial import (
    AxialSectioning,
    SectioningInfo,
    section_centres,
    sectioning_matrix,
)
from vemrestore.degrade._damage import DamageInfo, MissingSlices, MissingSlicesInfo, SliceDamage
from vemrestore.degrade._lateral import LateralDegradation, LateralInfo
from vemrestore.degrade._noise import (
    NoiseEstimate,
    NoiseInfo,
    PoissonGaussianNoise,
    estimate_poisson_gaussian,
)

__all__ = [
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
    "estimate_poisson_gaussian",
    "section_centres",
    "sectioning_matrix",
]
