"""Shared fixtures: real data lookup (skips with a reason when absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vemrestore.bench.datasets import DATA_ENV_VAR, real_dataset


@pytest.fixture
def real_path():
    """Return a function name -> Path that skips the test when the dataset is absent."""

    def find(name: str) -> Path:
        path = real_dataset(name)
        if path is None:
            pytest.skip(f"real dataset {name!r} not found (set {DATA_ENV_VAR} to ../shared/data)")
        return path

    return find


@pytest.fixture
def medulla_crop(real_path) -> np.ndarray:
    """A 64^3 float32 crop of the real medulla FIB-SEM cube (sample2), values 0..255."""
    import tifffile

    vol = tifffile.imread(real_path("medulla_sample2"))
    return vol[:64, 64:128, 64:128].astype(np.float32)
