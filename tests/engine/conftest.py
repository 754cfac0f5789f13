"""Test-only methods for the engine: a y/x box filter with a halo (also with a second
output), and a call counter."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict
from scipy.ndimage import uniform_filter

from vemrestore.methods import RESTORED, BlockRequest


class BoxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: Literal["box-test"] = "box-test"
    size: int = 5
    halo: int = 2


class BoxFilter:
    """A ``size`` x ``size`` mean in y/x that reads ``halo`` voxels around each block.

    With ``halo >= size // 2`` blocks agree with the whole array; a smaller
    halo makes block edges see reflected instead of real neighbours.
    """

    name = "box-test"
    outputs = (RESTORED,)

    def __init__(self, config: BoxConfig) -> None:
        self.config = config

    def fit(self, volume: Any) -> BoxFilter:
        return self

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        return tuple(input_shape)

    def output_voxel_size(self, voxel_size: tuple[float, float, float]) -> tuple[float, ...]:
        return tuple(voxel_size)

    def input_region(self, output_region, input_shape):
        h = self.config.halo
        zs, ys, xs = output_region
        return (
            zs,
            slice(max(0, ys.start - h), min(input_shape[1], ys.stop + h)),
            slice(max(0, xs.start - h), min(input_shape[2], xs.stop + h)),
        )

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        size = self.config.size
        filtered = uniform_filter(block, size=(1, size, size), mode="reflect")
        crop = tuple(
            slice(s.start - start, s.stop - start)
            for s, start in zip(request.output_region, request.input_start, strict=True)
        )
        return {RESTORED: filtered[crop]}

    def save(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "config.json").write_text(self.config.model_dump_json())


class BoxFilterWithAux(BoxFilter):
    """The box filter, plus an ``"aux"`` output: ``2 * input + 1`` (float32).

    Returns only the requested outputs and records each request's ``outputs``.
    """

    outputs = (RESTORED, "aux")

    def __init__(self, config: BoxConfig) -> None:
        super().__init__(config)
        self.requested: list[tuple[str, ...]] = []

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        self.requested.append(request.outputs)
        arrays = {}
        if RESTORED in request.outputs:
            arrays[RESTORED] = super().predict_block(block, request)[RESTORED]
        if "aux" in request.outputs:
            crop = tuple(
                slice(s.start - start, s.stop - start)
                for s, start in zip(request.output_region, request.input_start, strict=True)
            )
            arrays["aux"] = 2 * block[crop] + 1
        return arrays


class CountingMethod:
    """Wraps a method, counts ``predict_block`` calls and can fail after ``fail_after``."""

    def __init__(self, method: Any, fail_after: int | None = None) -> None:
        self.method = method
        self.fail_after = fail_after
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        if name == "method":  # not yet set (copy, unpickle): avoid recursing
            raise AttributeError(name)
        return getattr(self.method, name)

    def predict_block(self, block: np.ndarray, request: BlockRequest) -> dict[str, np.ndarray]:
        with self._lock:
            if self.fail_after is not None and self.calls >= self.fail_after:
                raise RuntimeError("simulated crash")
            self.calls += 1
        return self.method.predict_block(block, request)


@pytest.fixture
def box_filter():
    """Factory: ``box_filter(halo=2)`` builds a 5x5 y/x box filter method."""
    return lambda **options: BoxFilter(BoxConfig(**options))


@pytest.fixture
def box_filter_with_aux():
    """Factory: ``box_filter_with_aux(halo=2)``: the box filter with a second output ``"aux"``."""
    return lambda **options: BoxFilterWithAux(BoxConfig(**options))


@pytest.fixture
def counting():
    """Factory: ``counting(method, fail_after=None)`` wraps a method with a call counter."""
    return CountingMethod


@pytest.fixture
def random_volume():
    """Factory: ``random_volume(shape, seed=0)`` returns float32 values in [0, 1)."""
    return lambda shape, seed=0: np.random.default_rng(seed).random(shape, dtype=np.float32)
