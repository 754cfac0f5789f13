"""Restore missing and partially damaged serial sections from their neighbours.

Three registered methods share one geometry (``SliceMethod``: output =
input; only damaged voxels change, every other voxel is copied bit for bit):

- ``slices-linear``: linear interpolation along z between the nearest known
  voxels above and below.
- ``slices-flow``: optical-flow interpolation: TV-L1 flow between the two
  sections bounding a gap (scikit-image), both warped part way and blended.
- ``slices-diffusion``: a conditional diffusion model with anisotropic 3D
  convolutions (``vemrestore.models.anisotropic3d``) trained
  self-supervised on the user's own stack by hiding known-good sections and
  random regions; DDIM sampling with the known pixels re-imposed at every
  step, so masks of any shape are restored without retraining. One step
  (the default) gives the network's estimate of the mean given the
  neighbours; a few more steps give a sample with sharper texture, at a
  PSNR cost (see ``SlicesInference.num_inference_steps``).

The damage (which sections and pixels to restore) is attached to a method
with ``set_damage`` before prediction; ``vemrestore.api.prepare_slices``
builds it from indices, a mask and/or automatic detection, and
``vemrestore.api.restore_slices`` runs the whole restoration in memory. For
large stacks, pass the prepared method to ``vemrestore.engine.predict_volume``:
each block reads the XY halo and the neighbouring sections it needs.

Modules: ``config`` (options), ``damage`` (damage map, report), ``detect``
(automatic detection), ``interp`` (linear and flow interpolation), ``base``
(the shared geometry), ``classical`` (the two interpolating methods),
``pairs`` (training stacks, network adapter, loss) and ``diffusion``.
"""

from vemrestore.methods.slices.base import SliceMethod
from vemrestore.methods.slices.classical import ClassicalSlices, FlowSlices, LinearSlices
from vemrestore.methods.slices.config import (
    ClassicalSliceConfig,
    DiffusionSlicesConfig,
    FlowSlicesConfig,
    LinearSlicesConfig,
    SliceConfig,
    SlicesInference,
)
from vemrestore.methods.slices.damage import SliceDamageMap, SliceReport, parse_indices
from vemrestore.methods.slices.detect import DetectionResult, detect_damage
from vemrestore.methods.slices.diffusion import DiffusionSlices

__all__ = [
    "ClassicalSliceConfig",
    "ClassicalSlices",
    "DetectionResult",
    "DiffusionSlices",
    "DiffusionSlicesConfig",
    "FlowSlices",
    "FlowSlicesConfig",
    "LinearSlices",
    "LinearSlicesConfig",
    "SliceConfig",
    "SliceDamageMap",
    "SliceMethod",
    "SliceReport",
    "SlicesInference",
    "detect_damage",
    "parse_indices",
]
