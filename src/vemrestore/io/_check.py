"""Checks and summaries of an opened `Volume`."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume

__all__ = [
    "UNKNOWN_VOXEL_AXES",
    "axial_ratio",
    "check_finite",
    "describe_size",
    "describe_volume",
    "unknown_voxel_axes",
]

#: ``Volume.metadata`` key set by `open_volume`: the axes (letters of ``"ZYX"``) whose
#: voxel size the file does not give (1 nm was used); ``""`` when all are known.
UNKNOWN_VOXEL_AXES = "voxel_size_unknown"

# Lazy volumes up to this size get min/max in `describe_volume`.
_STATS_BYTES = 64 * 2**20
_MAX_LISTED = 10
_VOXEL_PREFIXES = ((1e12, "Tvox"), (1e9, "Gvox"), (1e6, "Mvox"), (1e3, "kvox"))
_BYTE_UNITS = ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB")


def check_finite(volume: Volume) -> None:
    """Raise if the volume holds NaN or Inf values (block by block for lazy volumes).

    `open_volume` reads NaN/Inf as they are, in every format; commands that
    need numbers everywhere (``iso``, ``predict``, ``train``, ``degrade``)
    call this, while ``slices`` accepts them in the voxels it restores.

    Parameters
    ----------
    volume : Volume
        Any volume; integer volumes pass at once.

    Raises
    ------
    UserInputError
        Naming the source, the number of bad voxels and the first z-slices
        that hold them, with how to restore or replace them.

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.io import Volume
    >>> check_finite(Volume(np.zeros((2, 3, 3), np.float32)))
    """
    if volume.dtype.kind != "f":
        return
    bad = ~np.isfinite(volume.data)
    per_slice = bad.sum(axis=(1, 2))
    if isinstance(per_slice, da.Array):
        per_slice = per_slice.compute()
    total = int(per_slice.sum())
    if total == 0:
        return
    slices = np.flatnonzero(per_slice)
    listed = ", ".join(str(int(z)) for z in slices[:_MAX_LISTED])
    more = ", ..." if len(slices) > _MAX_LISTED else ""
    name = volume.source or "the volume"
    raise UserInputError(
        f"{name} contains {total} NaN/Inf voxels (z slices {listed}{more}); restore those "
        f"sections first (e.g. `vemrestore slices {volume.source or 'IN'} restored.zarr --detect`, "
        "which restores every NaN/Inf voxel) or replace the values (e.g. numpy.nan_to_num)"
    )


def unknown_voxel_axes(volume: Volume) -> str:
    """Axes (letters of ``"ZYX"``) of ``volume`` whose voxel size is not known.

    An axis is unknown when its file gave no size for it (`open_volume`
    records those) or its size is exactly 1 nm: the default filled in for a
    missing size, which outputs carry on (no vEM voxel is 1 nm).

    Examples
    --------
    >>> import numpy as np
    >>> unknown_voxel_axes(Volume(np.zeros((2, 2, 2)))), unknown_voxel_axes(
    ...     Volume(np.zeros((2, 2, 2)), voxel_size=(40, 10, 10)))
    ('ZYX', '')
    """
    recorded = str(volume.metadata.get(UNKNOWN_VOXEL_AXES, ""))
    sizes = dict(zip("ZYX", volume.voxel_size, strict=True))
    return "".join(a for a in "ZYX" if a in recorded or sizes[a] == 1.0)


def axial_ratio(volume: Volume) -> float | None:
    """The axial factor its voxel sizes give: z / x voxel size (6 significant digits).

    None when the z or x voxel size is unknown (`unknown_voxel_axes`).

    Examples
    --------
    >>> import numpy as np
    >>> axial_ratio(Volume(np.zeros((2, 2, 2)), voxel_size=(25, 10, 10)))
    2.5
    """
    unknown = unknown_voxel_axes(volume)
    if "Z" in unknown or "X" in unknown:
        return None
    z, _, x = volume.voxel_size
    return float(f"{z / x:.6g}")


def describe_size(shape: tuple[int, ...], dtype: np.dtype) -> str:
    """``"250 x 250 x 250 (15.6 Mvox, 14.9 MiB uint8)"``: shape, voxels and bytes, readable.

    Examples
    --------
    >>> describe_size((250, 250, 250), np.dtype("uint8"))
    '250 x 250 x 250 (15.6 Mvox, 14.9 MiB uint8)'
    >>> describe_size((2, 3, 4), np.dtype("float32"))
    '2 x 3 x 4 (24 vox, 96 bytes float32)'
    """
    count = int(np.prod(shape, dtype=np.int64))
    voxels = next(
        (f"{count / scale:.3g} {unit}" for scale, unit in _VOXEL_PREFIXES if count >= scale),
        f"{count} vox",
    )
    nbytes, unit = float(count * np.dtype(dtype).itemsize), 0
    while nbytes >= 1024 and unit < len(_BYTE_UNITS) - 1:
        nbytes, unit = nbytes / 1024, unit + 1
    size = f"{nbytes:.3g} {_BYTE_UNITS[unit]}" if unit else f"{int(nbytes)} bytes"
    dims = " x ".join(str(n) for n in shape)
    return f"{dims} ({voxels}, {size} {np.dtype(dtype).name})"


def describe_volume(volume: Volume) -> dict[str, Any]:
    """A summary for ``vemrestore info``.

    Parameters
    ----------
    volume : Volume
        An opened volume.

    Returns
    -------
    dict
        ``source``, ``format``, ``shape`` (Z, Y, X), ``size`` (readable:
        shape, voxels, bytes and dtype, `describe_size`), ``dtype``,
        ``voxel_size`` (z, y, x) in nm, ``voxel_size_unknown`` (axes the file
        gives no size for), ``axial_factor`` (z / x voxel size, None when
        unknown: `axial_ratio`), ``translation`` (z, y, x) in nm of voxel
        (0, 0, 0)'s centre, ``extent_um`` (z, y, x), ``axes``,
        ``stored_axes``, ``lazy``, ``chunks`` (dask chunk shape, or None),
        ``size_mb`` (uncompressed), and ``min``/``max`` (None for lazy volumes
        over 64 MB, which would have to be read in full).

    Examples
    --------
    >>> import numpy as np
    >>> from vemrestore.io import Volume
    >>> info = describe_volume(Volume(np.arange(8, dtype=np.uint8).reshape(2, 2, 2)))
    >>> info["shape"], info["min"], info["max"]
    ((2, 2, 2), 0, 7)
    """
    nbytes = int(np.prod(volume.shape)) * volume.dtype.itemsize
    low = high = None
    if not volume.is_lazy or nbytes <= _STATS_BYTES:
        low, high = da.compute(volume.data.min(), volume.data.max())
        low, high = low.item(), high.item()
    chunks = getattr(volume.data, "chunksize", None)
    return {
        "source": volume.source,
        "format": volume.metadata.get("format"),
        "shape": volume.shape,
        "size": describe_size(volume.shape, volume.dtype),
        "dtype": str(volume.dtype),
        "voxel_size": volume.voxel_size,
        "voxel_size_unknown": unknown_voxel_axes(volume),
        "axial_factor": axial_ratio(volume),
        "translation": volume.translation,
        "extent_um": tuple(
            n * v / 1e3 for n, v in zip(volume.shape, volume.voxel_size, strict=True)
        ),
        "axes": volume.axes,
        "stored_axes": volume.metadata.get("stored_axes"),
        "lazy": volume.is_lazy,
        "chunks": tuple(int(c) for c in chunks) if chunks is not None else None,
        "size_mb": nbytes / 2**20,
        "min": low,
        "max": high,
    }
