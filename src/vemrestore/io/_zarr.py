"""Zarr and OME-Zarr: read v3 and v2 (OME-NGFF 0.5 and 0.4 and older), write either.

Written images are OME-Zarr: level ``"0"``, its pyramid (`vemrestore.io._pyramid`)
and the multiscale metadata, each level with its ``scale`` and ``translation``
in nanometres; Zarr v3 with OME-NGFF 0.5 by default, Zarr v2 with OME-NGFF 0.4
for older readers. Reading gives level 0 (or the named level) with its voxel
size and translation in nm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from vemrestore.errors import UserInputError
from vemrestore.io._common import RawArray, describe_arrays, nm_per_unit, voxel_size_from_attrs
from vemrestore.io._pyramid import (
    NGFF_DIMENSIONS,
    PyramidLevel,
    create_level_array,
    plan_pyramid,
    write_pyramid,
)

__all__ = [
    "NGFF_DIMENSIONS",
    "ZARR_FORMATS",
    "check_zarr_format",
    "read_zarr",
    "write_ngff_metadata",
    "write_zarr",
]

_NGFF_VERSION_V3 = "0.5"  # OME-NGFF for Zarr v3 stores
_NGFF_VERSION_V2 = "0.4"  # OME-NGFF for Zarr v2 stores
#: Zarr formats written: 3 (OME-NGFF 0.5, the default) and 2 (OME-NGFF 0.4, older tools).
ZARR_FORMATS = (3, 2)


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
    metadata: dict[str, Any] = {"array": array.path or "/"}
    if multiscale is not None and level is not None:
        axes, voxel_size, translation = _ngff_geometry(multiscale, level, array.ndim)
        # World position (nm) of voxel (0, 0, 0)'s centre, by axis letter: Volume.translation.
        metadata.update(format="ome-zarr", translation=translation)
    else:
        axes = None
        voxel_size = voxel_size_from_attrs(array.attrs, axes, array.ndim)
        metadata["format"] = "zarr"
    data = da.from_array(array, chunks="auto")
    return RawArray(data, axes, voxel_size, metadata)


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
) -> tuple[str | None, dict[str, float], dict[str, float]]:
    """Axis letters, voxel size and translation (nm, by letter) of one multiscale level.

    The level's ``coordinateTransformations`` apply first, then the
    multiscale's; a later ``scale`` also scales an earlier ``translation``.
    """
    axes_meta = multiscale.get("axes")
    if not axes_meta or len(axes_meta) != ndim:
        return None, {}, {}
    names, units = [], []
    for axis in axes_meta:
        if isinstance(axis, str):  # OME-NGFF 0.3: plain names, no units
            axis = {"name": axis}
        name = str(axis.get("name", "")).upper()
        kind = axis.get("type")
        letter = {"channel": "C", "time": "T"}.get(kind, name if len(name) == 1 else "?")
        names.append(letter)
        units.append(nm_per_unit(axis.get("unit")))
    scale, offset = np.ones(ndim), np.zeros(ndim)
    transforms = [
        *(level.get("coordinateTransformations") or []),
        *(multiscale.get("coordinateTransformations") or []),
    ]
    for transform in transforms:
        if transform.get("type") == "scale" and "scale" in transform:
            factor = np.asarray(transform["scale"], dtype=np.float64)
            scale, offset = scale * factor, offset * factor
        elif transform.get("type") == "translation" and "translation" in transform:
            offset = offset + np.asarray(transform["translation"], dtype=np.float64)
    spatial = [
        (letter, unit, s, t)
        for letter, unit, s, t in zip(names, units, scale, offset, strict=True)
        if letter in "ZYX" and unit is not None
    ]
    voxel_size = {letter: float(s) * unit for letter, unit, s, _ in spatial}
    translation = {letter: float(t) * unit for letter, unit, _, t in spatial}
    return "".join(names), voxel_size, translation


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
    translation: Sequence[float] | None = None,
    array_path: str = "0",
    name: str | None = None,
    pyramid: Sequence[PyramidLevel] = (),
) -> None:
    """Describe ``group[array_path]`` (and its pyramid) as an OME-Zarr image, axes z, y, x in nm.

    Call it after the data are written, so an interrupted write never looks
    like a complete image. A Zarr v3 group gets OME-NGFF 0.5 metadata (under
    ``ome``), a Zarr v2 group OME-NGFF 0.4. Each level's
    ``coordinateTransformations`` are its ``scale`` then its ``translation``,
    so the image overlays its input in world coordinates. Create the level
    arrays with `create_level_array` (v3: ``dimension_names`` z, y, x).

    Parameters
    ----------
    group : zarr.Group
        Opened for writing; must hold a 3D array at ``array_path`` and at
        each ``pyramid`` level's path.
    voxel_size : sequence of float
        (z, y, x) in nm; becomes the full-resolution level's ``scale``.
    translation : sequence of float, optional
        (z, y, x) in nm: world position of voxel (0, 0, 0)'s centre; default 0.
    array_path : str
        Path of the full-resolution array inside ``group``.
    name : str, optional
        Image name stored in the multiscale; a trailing ``.ome`` (from a
        ``NAME.ome.zarr`` file name) is dropped.
    pyramid : sequence of PyramidLevel
        The coarser levels, finest first (from `plan_pyramid`, without level 0).

    Raises
    ------
    ValueError
        If a level has no 3D array, or ``voxel_size`` is not three positive
        numbers, or ``translation`` not three finite numbers.

    Examples
    --------
    >>> import zarr
    >>> group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    >>> level = create_level_array(group, "0", (4, 8, 8), "uint8", (4, 8, 8))
    >>> write_ngff_metadata(group, (50.0, 4.0, 4.0), translation=(0.0, 2.0, 2.0), name="x.ome")
    >>> multiscale = group.attrs["ome"]["multiscales"][0]
    >>> multiscale["name"]
    'x'
    >>> for transform in multiscale["datasets"][0]["coordinateTransformations"]:
    ...     print(transform)
    {'type': 'scale', 'scale': [50.0, 4.0, 4.0]}
    {'type': 'translation', 'translation': [0.0, 2.0, 2.0]}
    """
    scale = [float(v) for v in voxel_size]
    if len(scale) != 3 or not all(np.isfinite(v) and v > 0 for v in scale):
        raise ValueError(
            f"voxel_size must be three positive numbers (z, y, x) in nm, got {voxel_size}"
        )
    offset = [0.0, 0.0, 0.0] if translation is None else [float(t) for t in translation]
    if len(offset) != 3 or not all(np.isfinite(t) for t in offset):
        raise ValueError(f"translation must be three finite numbers (z, y, x), got {translation}")
    levels = [(array_path, scale, offset)]
    levels += [(lv.path, list(lv.voxel_size), list(lv.translation)) for lv in pyramid]
    for path, _, _ in levels:
        array = group.get(path)
        if not isinstance(array, zarr.Array) or array.ndim != 3:
            raise ValueError(f"no 3D array at {path!r} in {group}; write the data first")
    multiscale: dict[str, Any] = {
        "axes": [{"name": a, "type": "space", "unit": "nanometer"} for a in NGFF_DIMENSIONS],
        "datasets": [
            {
                "path": path,
                "coordinateTransformations": [
                    {"type": "scale", "scale": level_scale},
                    {"type": "translation", "translation": level_offset},
                ],
            }
            for path, level_scale, level_offset in levels
        ],
    }
    if name is not None:
        multiscale["name"] = name[: -len(".ome")] if name.lower().endswith(".ome") else name
    if group.metadata.zarr_format == 3:
        group.attrs.update({"ome": {"version": _NGFF_VERSION_V3, "multiscales": [multiscale]}})
    else:
        group.attrs.update({"multiscales": [{"version": _NGFF_VERSION_V2, **multiscale}]})


def check_zarr_format(zarr_format: Any) -> int:
    """``zarr_format`` if it is 3 or 2, else a one-line `UserInputError`."""
    if isinstance(zarr_format, bool) or zarr_format not in ZARR_FORMATS:
        raise UserInputError(
            f"zarr_format must be 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4, for Fiji n5-ij and "
            f"older tools), got {zarr_format!r}"
        )
    return int(zarr_format)


def write_zarr(
    data: Any,
    tmp: Path,
    voxel_size: tuple[float, float, float],
    *,
    chunks: tuple[int, int, int],
    name: str,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    zarr_format: int = 3,
    pyramid: bool = True,
) -> None:
    """Write a ZYX array as an OME-Zarr image, chunk by chunk, with its pyramid.

    Level ``"0"`` is written first, then (``pyramid``) the coarser levels from
    it (`write_pyramid`, blockwise), then the OME-NGFF metadata: 0.5 for Zarr
    v3 (``zarr_format=3``), 0.4 for Zarr v2.
    """
    zarr_format = check_zarr_format(zarr_format)
    group = zarr.open_group(store=str(tmp), mode="w", zarr_format=zarr_format)
    array = create_level_array(group, "0", data.shape, data.dtype, chunks)
    if isinstance(data, np.ndarray):
        array[...] = data
    else:
        da.store(data.rechunk(array.chunks), array, lock=False)
    levels = plan_pyramid(data.shape, voxel_size, translation)[: None if pyramid else 1]
    write_pyramid(group, levels)
    write_ngff_metadata(
        group, voxel_size, translation=translation, array_path="0", name=name, pyramid=levels[1:]
    )
