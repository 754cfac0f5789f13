"""The method protocol and the registry every restoration method joins.

A method maps an input volume to an output volume whose voxel grid is the
input grid scaled by ``scale`` (z, y, x). The engine asks for output regions;
the method computes each from an input block that carries a halo. Nothing
here schedules blocks or writes files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from importlib import import_module
from pathlib import Path
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vemrestore.degrade._grid import MAX_SCALE_FACTOR, AxialGrid
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume

# Name of the restoration among a method's outputs (always its first).
RESTORED = "restored"
# The restorations of a plane method's XZ and YZ planes before they are fused
# (``predict_orientations``); D2R's stage II keeps them as two volumes.
XZ = "xz"
YZ = "yz"


class MethodConfig(BaseModel):
    """Options shared by all methods; each method subclasses it (``method`` names it)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Fields whose default changed since models were first saved, with the value a saved
    # config that lacks them was trained with (``load_method`` fills them in).
    saved_defaults: ClassVar[dict[str, Any]] = {}

    method: str


class AxialConfig(MethodConfig):
    """Options of an axial super-resolution method: the fine grid is ``scale_factor`` finer in z."""

    scale_factor: float = Field(
        gt=1.0, le=MAX_SCALE_FACTOR, description="Section thickness in fine slices (axial factor)"
    )


@dataclass(frozen=True)
class BlockRequest:
    """What the engine wants from one call of ``predict_block``.

    Attributes
    ----------
    input_start : tuple of int
        Index (z, y, x) in the whole input volume of the block's first voxel
        (halo included).
    output_region : tuple of slice
        Absolute output voxels (z, y, x) to produce; steps are 1.
    outputs : tuple of str
        Which of the method's ``outputs`` to return (the others may be skipped).
    """

    input_start: tuple[int, int, int]
    output_region: tuple[slice, slice, slice]
    outputs: tuple[str, ...] = (RESTORED,)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return tuple(s.stop - s.start for s in self.output_region)  # type: ignore[return-value]


@runtime_checkable
class Method(Protocol):
    """What every restoration method implements."""

    name: ClassVar[str]
    config: MethodConfig

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the arrays ``predict_block`` returns; the first is ``"restored"``."""

    def fit(self, volume: Volume) -> Method:
        """Learn from the volume to restore (a no-op for interpolation)."""

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape (Z, Y, X) of the result for an input of ``input_shape``."""

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """Voxel size (z, y, x) in nm of the result."""

    def output_translation(
        self, translation: tuple[float, float, float], voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """Position (z, y, x) in nm of the result's voxel (0, 0, 0) centre, for an input
        whose voxel (0, 0, 0) centre is at ``translation`` (so input and result overlay)."""

    def input_region(
        self, output_region: tuple[slice, slice, slice], input_shape: tuple[int, int, int]
    ) -> tuple[slice, slice, slice]:
        """Input voxels (halo included, clipped to the volume) that ``output_region`` needs."""

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        """Arrays ``request.outputs`` (float32, ``request.output_shape``) of the region."""

    def save(self, path: Path) -> None:
        """Write config (JSON) and trained state into directory ``path``."""

    # Optional: ``run_fingerprint() -> dict`` (JSON-ready) of state outside the
    # config that changes the output; the engine resumes a run only if it matches.


class AxialMethod:
    """The geometry of an axial method: its output is the input on the fine z grid.

    A subclass gives ``config`` (an ``AxialConfig``) and ``input_region``.
    """

    config: AxialConfig

    @cached_property
    def grid(self) -> AxialGrid:
        """Fine grid <-> section grid of ``config.scale_factor``."""
        return AxialGrid(self.config.scale_factor)

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Shape (Z, Y, X) of the result: ``grid.output_shape``."""
        return self.grid.output_shape(input_shape)

    def output_voxel_size(
        self, voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """Voxel size (z, y, x) in nm of the result: ``grid.output_voxel_size``."""
        return self.grid.output_voxel_size(voxel_size)

    def output_translation(
        self, translation: tuple[float, float, float], voxel_size: tuple[float, float, float]
    ) -> tuple[float, float, float]:
        """World position (nm) of the result's first voxel: ``grid.output_translation``."""
        return self.grid.output_translation(translation, voxel_size)


@dataclass(frozen=True)
class _Entry:
    cls: type
    config_cls: type[MethodConfig]


_REGISTRY: dict[str, _Entry] = {}


def register_method(name: str, config_cls: type[MethodConfig]) -> Callable[[type], type]:
    """Class decorator adding a method under ``name``; duplicates are refused.

    The class gets ``config_cls`` as its ``config_class``.
    """

    def decorate(cls: type) -> type:
        if name in _REGISTRY:
            raise RuntimeError(f"method {name!r} is already registered by {_REGISTRY[name].cls}")
        _REGISTRY[name] = _Entry(cls, config_cls)
        cls.config_class = config_cls  # type: ignore[attr-defined]
        return cls

    return decorate


def available_methods() -> list[str]:
    """Names of all registered methods, sorted."""
    _load_builtin_methods()
    return sorted(_REGISTRY)


def get_method(name: str) -> type:
    """The class registered under ``name``; an unknown name lists the known ones."""
    _load_builtin_methods()
    if name not in _REGISTRY:
        raise UserInputError(
            f"unknown method {name!r} (choose one of: {', '.join(sorted(_REGISTRY))})"
        )
    return _REGISTRY[name].cls


def method_config_class(name: str) -> type[MethodConfig]:
    """The config model of method ``name``."""
    get_method(name)
    return _REGISTRY[name].config_cls


def create_method(name: str, **options: Any) -> Method:
    """Build method ``name`` from keyword options validated by its config."""
    cls = get_method(name)
    config = _REGISTRY[name].config_cls(method=name, **options)
    return cls(config)


# Modules whose import registers the built-in methods.
BUILTIN_METHOD_MODULES = ("interpolate", "skeleton", "skelem", "d2r", "lateral", "slices")


def _load_builtin_methods() -> None:
    for module in BUILTIN_METHOD_MODULES:
        import_module(f"vemrestore.methods.{module}")
