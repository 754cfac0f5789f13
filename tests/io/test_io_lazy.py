"""A 4 GB Zarr opens lazily: nothing is read until a slice is asked for."""

from __future__ import annotations

import time

import numpy as np
import zarr

from vemrestore.io import describe_volume, open_volume


def test_sparse_4gb_zarr_opens_lazily(tmp_path):
    shape = (1024, 2048, 2048)  # 4 GiB of uint8, one chunk on disk
    array = zarr.create_array(
        tmp_path / "big.zarr",
        shape=shape,
        dtype="uint8",
        chunks=(64, 256, 256),
        fill_value=0,
        attributes={"voxel_size": [30.0, 8.0, 8.0]},
    )
    array[:64, :256, :256] = 7

    start = time.perf_counter()
    volume = open_volume(tmp_path / "big.zarr")
    info = describe_volume(volume)
    assert time.perf_counter() - start < 2.0
    assert volume.is_lazy
    assert volume.shape == shape
    assert volume.voxel_size == (30.0, 8.0, 8.0)
    assert info["min"] is None and info["size_mb"] == 4096

    plane = np.asarray(volume.data[10])
    assert plane.shape == (2048, 2048)
    assert plane[:256, :256].min() == 7 and plane[256:].max() == 0
