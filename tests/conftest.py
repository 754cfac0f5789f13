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


@pytest.fixture
def validate_ome_zarr():
    """A function path -> the OME-Zarr image model (ome-zarr-models), raising if invalid."""
    return _validate_ome_zarr


def _validate_ome_zarr(path):
    """The image model of ``path`` from ome-zarr-models (v0.5 for Zarr v3, v0.4 for v2).

    Raises (a pydantic ValidationError) when the store is not a valid OME-Zarr image.
    """
    import zarr

    pytest.importorskip("ome_zarr_models", reason="ome-zarr-models (test extra) is not installed")
    group = zarr.open_group(str(path), mode="r")
    if group.metadata.zarr_format == 3:
        from ome_zarr_models.v05.image import Image
    else:
        from ome_zarr_models.v04.image import Image
        from pydantic_zarr.v2 import ArraySpec

        # ome-zarr-models < 1.7 leaves this forward reference unresolved under pydantic
        # >= 2.13 (1.7 pins pydantic < 2.13 instead); resolving it is all the fix needs.
        Image.model_rebuild(_types_namespace={"ArraySpec": ArraySpec})
    return Image.from_zarr(group)


@pytest.fixture
def fail_replace_to(monkeypatch):
    """A function ``(target, error)``: ``os.replace(..., target)`` then raises ``error``
    (an ``OSError``, e.g. a read-only file system); other renames work."""
    import os

    real = os.replace

    def install(target, error: OSError) -> None:
        def fake(src, dst, *args, **kwargs):
            if os.fspath(dst) == os.fspath(target):
                raise error
            return real(src, dst, *args, **kwargs)

        monkeypatch.setattr(os, "replace", fake)

    return install


@pytest.fixture(scope="session")
def segmenter():
    """The shipped learned segmenter (its weights are part of the package)."""
    from vemrestore.metrics import load_segmenter

    return load_segmenter()


@pytest.fixture
def one_torch_thread():
    """Torch on one thread for the test, restored after: tiny tensors on a busy 2-core
    machine only add synchronisation with a second thread."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
