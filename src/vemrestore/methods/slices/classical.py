"""Slice restorers without training: linear and optical-flow interpolation along z."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Self

import numpy as np

from vemrestore.io._volume import Volume
from vemrestore.methods._base import register_method
from vemrestore.methods.slices.base import SliceMethod
from vemrestore.methods.slices.config import (
    ClassicalSliceConfig,
    FlowSlicesConfig,
    LinearSlicesConfig,
)
from vemrestore.methods.slices.interp import FlowOptions, fill_flow, fill_linear

__all__ = ["ClassicalSlices", "FlowSlices", "LinearSlices"]


class ClassicalSlices(SliceMethod):
    """A slice restorer that interpolates (no training, nothing to save but the config)."""

    config: ClassicalSliceConfig

    def __init__(self, config: ClassicalSliceConfig) -> None:
        self.config = config

    @property
    def halo(self) -> int:
        return self.config.halo

    def fit(self, volume: Volume) -> Self:
        """Interpolation needs no training."""
        return self

    def save(self, path: Path) -> None:
        """Write ``config.json`` into directory ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(self.config.model_dump_json(indent=2))


@register_method("slices-linear", LinearSlicesConfig)
class LinearSlices(ClassicalSlices):
    """Linear interpolation along z of the damaged voxels.

    Examples
    --------
    >>> from vemrestore.methods import BlockRequest
    >>> from vemrestore.methods.slices import SliceDamageMap
    >>> method = LinearSlices(LinearSlicesConfig())
    >>> stack = np.stack([np.zeros((4, 4)), np.full((4, 4), 9.0), np.full((4, 4), 2.0)])
    >>> method.set_damage(SliceDamageMap.build(stack.shape, missing=[1]))
    >>> request = BlockRequest((0, 0, 0), tuple(slice(0, n) for n in stack.shape))
    >>> float(method.predict_block(stack, request)["restored"][1, 0, 0])
    1.0
    """

    name = "slices-linear"
    config: LinearSlicesConfig

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        return fill_linear(block, mask)


@register_method("slices-flow", FlowSlicesConfig)
class FlowSlices(ClassicalSlices):
    """Optical-flow interpolation between the sections bounding each gap.

    Runs at the top or bottom of the stack (one neighbour only) fall back to
    copying the nearest section (as linear interpolation does).
    """

    name = "slices-flow"
    config: FlowSlicesConfig

    def _restore(
        self, block: np.ndarray, mask: np.ndarray, origin: tuple[int, ...], z_out: slice
    ) -> np.ndarray:
        options = FlowOptions(
            **self.config.model_dump(include={f.name for f in fields(FlowOptions)})
        )
        return fill_flow(block, mask, z_out, options=options)
