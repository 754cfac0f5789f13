"""D2R: a 2D plane teacher recovers XZ/YZ volumes, a fast 3D network learns from them.

Registers two methods: ``diffusion2d`` (the 2D diffusion model of stages I-II
on its own) and ``d2r`` (the three stages; only the 3D network runs at
inference). See ``method`` for the stages and ``config`` for the options.
"""

from vemrestore.methods.d2r.config import D2RConfig
from vemrestore.methods.d2r.method import D2R, PlaneOrientations
from vemrestore.methods.d2r.teacher import PlaneDiffusion, PlaneDiffusionConfig, PlaneSampling

__all__ = [
    "D2R",
    "D2RConfig",
    "PlaneDiffusion",
    "PlaneDiffusionConfig",
    "PlaneOrientations",
    "PlaneSampling",
]
