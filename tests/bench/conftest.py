"""Fixtures of the benchmark tests."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from scipy import ndimage as ndi

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@contextmanager
def _imported_benchmark(name: str) -> Iterator[ModuleType]:
    """``benchmarks/<name>.py`` imported as a module (benchmarks/ is not a package).

    The folder is on ``sys.path`` meanwhile, as when the script runs, so the
    scripts that import a sibling find it; the module is in ``sys.modules``
    meanwhile, where its dataclasses look it up. Both are as before afterwards,
    siblings the script imported included.
    """
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    modules_before = dict(sys.modules)
    sys.path.insert(0, str(BENCHMARKS))
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))
        for added in set(sys.modules) - set(modules_before):
            if Path(getattr(sys.modules[added], "__file__", None) or "/").parent == BENCHMARKS:
                del sys.modules[added]
        if name in modules_before:
            sys.modules[name] = modules_before[name]


@pytest.fixture(scope="session")
def benchmark_module():
    """``with benchmark_module("slices_bench") as bench: ...``: a script as a module."""
    return _imported_benchmark


class DarkLineSegmenter:
    """A stand-in segmenter: membranes are the dark pixels, cells their complement's components."""

    def boundary_map(self, volume, *, normalization):
        return (normalization.apply(volume) < 0.5).astype(np.float32)

    def segment(self, volume, *, mode, normalization):
        assert mode == "2d"
        planes = self.boundary_map(volume, normalization=normalization) < 0.5
        return np.stack([ndi.label(p)[0] for p in planes]).astype(np.int32)

    def features(self, tiles, *, normalization):
        x = normalization.apply(tiles)
        return np.stack([x.mean((1, 2)), x.std((1, 2)), (x < 0.5).mean((1, 2))], axis=1)


@pytest.fixture
def dark_line_segmenter() -> DarkLineSegmenter:
    return DarkLineSegmenter()
