"""Checks and summaries of an opened `Volume`."""

from __future__ import annotations

from typing import Any

import dask.array as da
import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume

__all__ = ["check_finite", "describe_volume"]

# Lazy volumes up to this size get min/max in `describe_volume`.
_STATS_BYTES = 64 * 2**20
_MAX_LISTED = 10


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


def describe_volume(volume: Volume) -> dict[str, Any]:
    """A summary for ``vemrestore info``.

    Parameters
    ----------
    volume : Volume
        An opened volume.

    Returns
    -------
    dict
        ``source``, ``format``, ``shape`` (Z, Y, X), ``dtype``, ``voxel_size``
        (z, y, x) in nm, ``extent_um`` (z, y, x), ``axes``, ``stored_axes``,
        ``lazy``, ``chunks`` (dask chunk shape, or None), ``size_mb``
        (uncompressed), and ``min``/``max`` (None for lazy volumes over 64 MB,
        which would have to be read in full).

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
        "dtype": str(volume.dtype),
        "voxel_size": volume.voxel_size,
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
