"""HDF5 (h5py): ``file.h5:/group/dataset``, always opened lazily."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dask.array as da
import h5py
import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io._common import RawArray, describe_arrays, voxel_size_from_attrs

__all__ = ["DEFAULT_DATASET", "read_hdf5", "write_hdf5"]

#: Dataset name used when an HDF5 output path gives none.
DEFAULT_DATASET = "data"


def read_hdf5(file: Path, inner: str | None, *, source: str) -> RawArray:
    """Open one dataset of an HDF5 file as a dask array (the file stays open while it is used)."""
    handle = h5py.File(file, "r")
    try:
        dataset = _find_dataset(handle, inner, source=source)
        axes = _ilastik_axes(dataset.attrs.get("axistags"), dataset.ndim)
        voxel_size = voxel_size_from_attrs(dataset.attrs, axes, dataset.ndim)
        data = da.from_array(dataset, chunks="auto")
    except BaseException:
        handle.close()
        raise
    return RawArray(data, axes, voxel_size, {"dataset": dataset.name})


def _find_dataset(handle: h5py.File, inner: str | None, *, source: str) -> h5py.Dataset:
    """The dataset at ``inner``, or the only dataset with three or more dimensions."""
    node = handle if inner is None else handle.get(inner)
    if node is None:
        raise UserInputError(
            f"{source}: no dataset {inner!r} in {handle.filename}; "
            f"datasets: {describe_arrays(_datasets(handle))} (use file.h5:/path/to/dataset)"
        )
    if isinstance(node, h5py.Dataset):
        return node
    found = _datasets(node)
    volumes = [d for d in found if d.ndim >= 3]
    if inner is None and len(volumes) == 1:
        return volumes[0]
    where = "" if inner is None else f" group {inner!r}"
    raise UserInputError(
        f"{source}:{where} holds {len(volumes)} datasets with 3 or more dimensions, "
        f"name one as file.h5:/path/to/dataset; datasets: {describe_arrays(found)}"
    )


def _datasets(group: h5py.Group) -> list[h5py.Dataset]:
    """All datasets below ``group``, in HDF5 visiting order."""
    found: list[h5py.Dataset] = []
    group.visititems(lambda _, obj: found.append(obj) if isinstance(obj, h5py.Dataset) else None)
    return found


def _ilastik_axes(axistags: Any, ndim: int) -> str | None:
    """Axis letters from ilastik's ``axistags`` JSON attribute (e.g. ``zyxc``), if present."""
    if axistags is None:
        return None
    try:
        keys = [axis["key"] for axis in json.loads(axistags)["axes"]]
    except (TypeError, ValueError, KeyError):
        return None
    return "".join(keys).upper() if len(keys) == ndim else None


def write_hdf5(
    data: Any,
    tmp: Path,
    voxel_size: tuple[float, float, float],
    *,
    dataset: str,
    chunks: tuple[int, int, int],
) -> None:
    """Write a ZYX array as one chunked, gzip-compressed dataset with voxel-size attributes."""
    with h5py.File(tmp, "w") as handle:
        out = handle.create_dataset(
            dataset,
            shape=data.shape,
            dtype=data.dtype,
            chunks=chunks,
            compression="gzip",
            shuffle=True,
        )
        if isinstance(data, np.ndarray):
            out[...] = data
        else:
            da.store(data.rechunk(chunks), out, lock=True)
        out.attrs["voxel_size"] = np.asarray(voxel_size, dtype=np.float64)
        out.attrs["element_size_um"] = np.asarray(voxel_size, dtype=np.float64) / 1e3
