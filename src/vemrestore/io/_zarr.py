"""Zarr (v3, and v2 for reading) and OME-Zarr (OME-NGFF multiscales)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from vemrestore.errors import UserInputError
from vemrestore.io._common import RawArray, describe_arrays, nm_per_unit, voxel_size_from_attrs

__all__ = ["NGFF_DIMENSIONS", "read_zarr", "write_ngff_metadata", "write_zarr"]

#: ``dimension_names`` for the level arrays of an OME-Zarr (v3) volume.
NGFF_DIMENSIONS = ("z", "y", "x")

_NGFF_VERSION_V3 = "0.5"  # OME-NGFF for Zarr v3 stores
_NGFF_VERSION_V2 = "0.4"  # OME-NGFF for Zarr v2 stores


def read_zarr(file: Path, inner: str | None, *, source: str) -> RawArray:
    """Open a Zarr array, or level 0 of an OME-Zarr image, as a dask array."""
    root = zarr.open(store=str(file), mode="r")
    node = root
    if inner is not None:
        if not isinstance(root, zarr.Group) or inner not in root:
            raise UserInputError(
                f"{source}: no array {inner!r} in {file}; arrays: {_list_arrays(root)} "
                "(use store.zarr:/path/to/array)"
            )
        node = root[inner]
    multiscale, level = None, None
    if isinstance(node, zarr.Group):
        multiscale = _multiscale(node.attrs)
        if multiscale is not None:
            level = multiscale["datasets"][0]
            node = node[level["path"]]
        else:
            node = _only_volume(node, source=source)
    elif inner is not None:
        parent_path, _, name = inner.rpartition("/")
        parent = root[parent_path] if parent_path else root
        multiscale = _multiscale(parent.attrs)
        if multiscale is not None:
            level = next((d for d in multiscale["datasets"] if d.get("path") == name), None)
            multiscale = multiscale if level is not None else None
    array: zarr.Array = node  # type: ignore[assignment]
    if multiscale is not None and level is not None:
        axes, voxel_size = _ngff_geometry(multiscale, level, array.ndim)
        fmt = "ome-zarr"
    else:
        axes = None
        voxel_size = voxel_size_from_attrs(array.attrs, axes, array.ndim)
        fmt = "zarr"
    data = da.from_array(array, chunks="auto")
    return RawArray(data, axes, voxel_size, {"format": fmt, "array": array.path or "/"})


def _multiscale(attrs: Mapping[str, Any]) -> dict[str, Any] | None:
    """The first OME-NGFF multiscale of a group (0.5 under ``ome``, or 0.4 and older)."""
    ome = attrs.get("ome", attrs)
    multiscales = ome.get("multiscales") if isinstance(ome, Mapping) else None
    if not multiscales or not isinstance(multiscales, Sequence):
        return None
    first = multiscales[0]
    if not isinstance(first, Mapping) or not first.get("datasets"):
        raise ValueError("OME-NGFF 'multiscales' has no datasets")
    return dict(first)


def _ngff_geometry(
    multiscale: Mapping[str, Any], level: Mapping[str, Any], ndim: int
) -> tuple[str | None, dict[str, float]]:
    """Axis letters and the voxel size in nm of one multiscale level."""
    axes_meta = multiscale.get("axes")
    if not axes_meta or len(axes_meta) != ndim:
        return None, {}
    names, units = [], []
    for axis in axes_meta:
        if isinstance(axis, str):  # OME-NGFF 0.3: plain names, no units
            axis = {"name": axis}
        name = str(axis.get("name", "")).upper()
        kind = axis.get("type")
        letter = {"channel": "C", "time": "T"}.get(kind, name if len(name) == 1 else "?")
        names.append(letter)
        units.append(nm_per_unit(axis.get("unit")))
    scale = np.ones(ndim)
    transforms = [
        *(level.get("coordinateTransformations") or []),
        *(multiscale.get("coordinateTransformations") or []),
    ]
    for transform in transforms:
        if transform.get("type") == "scale" and "scale" in transform:
            scale = scale * np.asarray(transform["scale"], dtype=np.float64)
    voxel_size = {
        letter: float(s) * unit
        for letter, s, unit in zip(names, scale, units, strict=True)
        if letter in "ZYX" and unit is not None
    }
    return "".join(names), voxel_size


def _only_volume(group: zarr.Group, *, source: str) -> zarr.Array:
    """The only array with three or more dimensions in a plain (non-NGFF) group."""
    arrays = [a for _, a in group.members(max_depth=None) if isinstance(a, zarr.Array)]
    volumes = [a for a in arrays if a.ndim >= 3]
    if len(volumes) == 1:
        return volumes[0]
    raise UserInputError(
        f"{source} holds {len(volumes)} arrays with 3 or more dimensions and no OME-NGFF "
        f"metadata; name one as store.zarr:/path/to/array; arrays: {_list_arrays(group)}"
    )


def _list_arrays(node: Any) -> str:
    """The arrays of a store (or the array itself) for an error message."""
    if not isinstance(node, zarr.Group):
        return describe_arrays([node])
    return describe_arrays(
        [a for _, a in node.members(max_depth=None) if isinstance(a, zarr.Array)]
    )


def write_ngff_metadata(
    group: zarr.Group,
    voxel_size: Sequence[float],
    *,
    array_path: str = "0",
    name: str | None = None,
) -> None:
    """Describe ``group[array_path]`` as a one-level OME-Zarr image (axes z, y, x in nanometer).

    Call it after the data are written, so an interrupted write never looks
    like a complete image. A Zarr v3 group gets OME-NGFF 0.5 metadata (under
    ``ome``), a Zarr v2 group OME-NGFF 0.4. For v3, create the level array
    with ``dimension_names=("z", "y", "x")`` as OME-NGFF 0.5 asks.

    Parameters
    ----------
    group : zarr.Group
        Opened for writing; must hold a 3D array at ``array_path``.
    voxel_size : sequence of float
        (z, y, x) in nm; becomes the level's ``scale`` transformation.
    array_path : str
        Path of the full-resolution array inside ``group``.
    name : str, optional
        Image name stored in the multiscale.

    Raises
    ------
    ValueError
        If there is no 3D array at ``array_path`` or ``voxel_size`` is not
        three positive numbers.

    Examples
    --------
    >>> import zarr
    >>> group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> level = group.create_array(
    ...     "0", shape=(4, 8, 8), dtype="uint8", chunks=(4, 8, 8), dimension_names=("z", "y", "x")
    ... )
    >>> write_ngff_metadata(group, (50.0, 4.0, 4.0))
    >>> group.attrs["ome"]["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    [{'type': 'scale', 'scale': [50.0, 4.0, 4.0]}]
    """
    scale = [float(v) for v in voxel_size]
    if len(scale) != 3 or not all(np.isfinite(v) and v > 0 for v in scale):
        raise ValueError(
            f"voxel_size must be three positive numbers (z, y, x) in nm, got {voxel_size}"
        )
    array = group.get(array_path)
    if not isinstance(array, zarr.Array) or array.ndim != 3:
        raise ValueError(f"no 3D array at {array_path!r} in {group}; write the data first")
    multiscale: dict[str, Any] = {
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in NGFF_DIMENSIONS],
        "datasets": [
            {"path": array_path, "coordinateTransformations": [{"type": "scale", "scale": scale}]}
        ],
    }
    if name is not None:
        multiscale["name"] = name
    if group.metadata.zarr_format == 3:
        group.attrs.update({"ome": {"version": _NGFF_VERSION_V3, "multiscales": [multiscale]}})
    else:
        group.attrs.update({"multiscales": [{"version": _NGFF_VERSION_V2, **multiscale}]})


def write_zarr(
    data: Any,
    tmp: Path,
    voxel_size: tuple[float, float, float],
    *,
    chunks: tuple[int, int, int],
    name: str,
) -> None:
    """Write a ZYX array as a Zarr v3 OME-Zarr image with one level ``0``, chunk by chunk."""
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=3)
    array = group.create_array(
        "0", shape=data.shape, dtype=data.dtype, chunks=chunks, dimension_names=NGFF_DIMENSIONS
    )
    if isinstance(data, np.ndarray):
        array[...] = data
    else:
        da.store(data.rechunk(chunks), array, lock=False)
    write_ngff_metadata(group, voxel_size, array_path="0", name=name)
