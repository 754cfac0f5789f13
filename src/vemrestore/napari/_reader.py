"""napari reader: TIFF, HDF5, Zarr/OME-Zarr and MRC volumes placed in world space (nm)."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vemrestore.errors import UserInputError
from vemrestore.io import Volume, format_of, open_volume, split_dataset_path

__all__ = ["get_reader", "layer_data", "read_volumes"]

LayerData = tuple[Any, dict[str, Any], str]


def get_reader(path: str | Sequence[str]) -> Callable[[Any], list[LayerData]] | None:
    """The reader for ``path`` (one file or several), or None when a path is not a volume.

    ``file.h5:/group/dataset`` and ``store.zarr:/array`` name one dataset;
    an HDF5 file alone opens its first dataset with three or more dimensions.
    """
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    for item in paths:
        file, _ = split_dataset_path(_strip(item))
        try:
            format_of(file)
        except UserInputError:
            return None
    return read_volumes


def read_volumes(path: str | Sequence[str]) -> list[LayerData]:
    """One image layer per path, with ``scale`` = voxel size and ``translate`` = position (nm)."""
    paths = [path] if isinstance(path, str | os.PathLike) else list(path)
    return [layer_data(open_volume(_with_dataset(_strip(p)))) for p in paths]


def layer_data(volume: Volume, **kwargs: Any) -> LayerData:
    """napari image layer data of ``volume``: lazy data, scale and translate in nm.

    Parameters
    ----------
    volume : Volume
        Any volume.
    **kwargs
        Further layer options (``name``, ``colormap``, ...); they take precedence.
    """
    name = Path(split_dataset_path(volume.source)[0]).name if volume.source else "volume"
    dataset = volume.metadata.get("dataset")
    if volume.metadata.get("format") == "hdf5" and dataset:
        name = f"{name}:{dataset}"
    meta = {
        "name": name,
        "scale": tuple(volume.voxel_size),
        "translate": tuple(volume.translation),
        "units": "nm",
        "axis_labels": ("z", "y", "x"),
        "metadata": {"vemrestore": {k: v for k, v in volume.metadata.items() if k != "report"}},
        **kwargs,
    }
    return volume.data, meta, "image"


def _strip(path: str | os.PathLike[str]) -> str:
    """The path as text without a trailing separator (napari passes Zarr folders so)."""
    text = os.fspath(path)
    return text.rstrip("/\\") or text


def _with_dataset(path: str) -> str:
    """``path``, or for an HDF5 file without a dataset its first one with 3+ dimensions."""
    file, inner = split_dataset_path(path)
    if inner is not None or format_of(file) != "hdf5" or not file.is_file():
        return path
    import h5py

    from vemrestore.io._hdf5 import _datasets

    try:
        with h5py.File(file, "r") as handle:
            volumes = [d.name for d in _datasets(handle) if d.ndim >= 3]
    except OSError:
        return path  # open_volume explains what is wrong with the file
    return f"{path}:{volumes[0]}" if volumes else path
