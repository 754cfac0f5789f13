"""HDF5 (h5py): ``file.h5:/group/dataset``, always opened lazily.

Space is read from the dataset's attributes, in nm and in the dataset's
axis order (three values on a 4D/5D dataset are z, y, x): the voxel size
from ``voxel_size``, ``resolution`` (CREMI, gunpowder) or
``element_size_um`` (ilastik, µm); the world position of voxel (0, 0, 0)
from ``translation`` or ``offset`` (CREMI, gunpowder, funlib). Written
datasets carry ``voxel_size``, ``resolution`` and ``offset`` in nm and
``element_size_um``, so those tools read them back.
"""

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
#: Attributes holding the world position (nm) of voxel (0, 0, 0), first found wins.
TRANSLATION_ATTRS = ("translation", "offset")


def read_hdf5(file: Path, inner: str | None, *, source: str) -> RawArray:
    """Open one dataset of an HDF5 file as a dask array (the file stays open while it is used)."""
    handle = h5py.File(file, "r")
    try:
        dataset = _find_dataset(handle, inner, source=source)
        axes = _ilastik_axes(dataset.attrs.get("axistags"), dataset.ndim)
        voxel_size = voxel_size_from_attrs(dataset.attrs, axes, dataset.ndim)
        translation = _translation_from_attrs(dataset.attrs, axes, dataset.ndim)
        data = da.from_array(dataset, chunks="auto")
    except BaseException:
        handle.close()
        raise
    return RawArray(data, axes, voxel_size, {"dataset": dataset.name, "translation": translation})


def _translation_from_attrs(attrs: Any, axes: str | None, ndim: int) -> dict[str, float]:
    """Position (nm) of voxel (0, 0, 0) by axis letter from ``translation`` or ``offset``.

    The values follow the same axis rules as the voxel size; an attribute that
    is not numbers is ignored (it cannot make the data unreadable).
    """
    for key in TRANSLATION_ATTRS:
        if key not in attrs:
            continue
        try:  # in nm, like ``voxel_size``: the same reading rules
            return voxel_size_from_attrs({"voxel_size": attrs[key]}, axes, ndim)
        except (TypeError, ValueError):
            return {}
    return {}


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
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> None:
    """Write a ZYX array as one chunked, gzip-compressed dataset with its space attributes.

    ``voxel_size`` and ``resolution`` (nm), ``element_size_um`` (µm) and
    ``offset`` (nm: ``translation``, the position of voxel (0, 0, 0)), z/y/x.
    """
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
        sizes = np.asarray(voxel_size, dtype=np.float64)
        out.attrs["voxel_size"] = sizes
        out.attrs["resolution"] = sizes
        out.attrs["element_size_um"] = sizes / 1e3
        out.attrs["offset"] = np.asarray(translation, dtype=np.float64)
