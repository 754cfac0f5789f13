"""`open_volume`: any supported file to a ZYX `Volume`."""

from __future__ import annotations

import os
import warnings

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io._axes import to_zyx
from vemrestore.io._common import RawArray, reading_errors
from vemrestore.io._hdf5 import read_hdf5
from vemrestore.io._mrc import read_mrc
from vemrestore.io._paths import format_of, split_dataset_path
from vemrestore.io._tiff import read_tiff
from vemrestore.io._volume import Volume
from vemrestore.io._zarr import read_zarr

__all__ = ["open_volume"]

_KIND = {"tiff": "TIFF", "hdf5": "HDF5", "zarr": "Zarr", "mrc": "MRC"}


def open_volume(path: str | os.PathLike[str], *, channel: int | None = None) -> Volume:
    """Open a 3D volume from TIFF, HDF5, Zarr/OME-Zarr or MRC, with its voxel size in nm.

    Small TIFF and MRC files are read into memory; HDF5, Zarr and files over
    512 MB open lazily as dask arrays (``volume.is_lazy``). Singleton axes
    other than Z, Y and X are dropped and the result is always ZYX (a stack
    of one section has Z = 1). Values are not checked, whatever the format:
    NaN/Inf voxels are read as they are (a damaged section for ``slices`` to
    restore); call `check_finite` where every voxel must be a number.

    Parameters
    ----------
    path : str or path-like
        ``vol.tif``, ``vol.h5:/group/dataset`` (the dataset may be omitted when
        the file holds exactly one with three or more dimensions),
        ``vol.zarr`` (plain array or OME-Zarr, level 0), ``vol.zarr:/array``
        or ``vol.zarr/0``, ``vol.mrc`` (also ``.rec``, ``.map``, ``.st``).
    channel : int, optional
        Channel to keep when the file has a channel axis (required then).

    Returns
    -------
    Volume
        ``data`` of shape (Z, Y, X); ``voxel_size`` (z, y, x) in nm from
        ImageJ or OME-XML metadata (TIFF), ``voxel_size`` / ``resolution`` /
        ``element_size_um`` attributes (HDF5, Zarr), the OME-NGFF ``scale``
        (OME-Zarr) or the header (MRC, Å). ``metadata`` records the format,
        the stored axes and the channel.

    Raises
    ------
    UserInputError
        Missing, unreadable, truncated or corrupt file, unknown suffix,
        missing dataset, 2D image, or channel axis without ``channel``.

    Warns
    -----
    UserWarning
        When the file gives no (usable) voxel size for an axis; that axis is
        then set to 1 nm.

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> from vemrestore.io import write_volume
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "vol.tif"
    >>> _ = write_volume(np.zeros((8, 16, 16), np.uint8), path, voxel_size=(50, 4, 4))
    >>> volume = open_volume(path)
    >>> volume.shape, volume.voxel_size
    ((8, 16, 16), (50.0, 4.0, 4.0))
    """
    source = os.fspath(path)
    file, inner = split_dataset_path(path)
    fmt = format_of(file, source=source)
    if not file.exists():
        where = source if inner is None else f"{source}: {file}"
        raise UserInputError(f"{where} does not exist (check the path)")
    with reading_errors(source, _KIND[fmt]):
        if fmt == "tiff":
            raw = read_tiff(file)
        elif fmt == "hdf5":
            raw = read_hdf5(file, inner, source=source)
        elif fmt == "zarr":
            raw = read_zarr(file, inner, source=source)
        else:
            raw = read_mrc(file)
    return _to_volume(raw, fmt=fmt, source=source, channel=channel)


def _to_volume(raw: RawArray, *, fmt: str, source: str, channel: int | None) -> Volume:
    """Normalise axes and fill in an unknown voxel size (with a warning)."""
    dtype = np.dtype(raw.data.dtype)
    if dtype.kind not in "biuf":
        raise UserInputError(
            f"{source} holds {dtype} values; a volume of integers or real numbers is needed"
        )
    data, axes = to_zyx(raw.data, raw.axes, source=source, channel=channel)
    missing = [a for a in "ZYX" if not (raw.voxel_size.get(a, 0.0) > 0)]
    if missing:
        where = raw.metadata.get("voxel_size_from")
        why = f" (metadata: {where})" if where else ""
        warnings.warn(
            f"{source} gives no voxel size for axis {', '.join(missing)}{why}; "
            "using 1 nm there, and outputs carry it (where it matters, save the input with "
            "its voxel size: vemrestore.io.write_volume(data, path, voxel_size=(z, y, x)) in nm)",
            UserWarning,
            stacklevel=3,
        )
    voxel_size = tuple(raw.voxel_size.get(a, 1.0) if a not in missing else 1.0 for a in "ZYX")
    metadata = {"format": fmt, "stored_axes": axes, "stored_shape": tuple(raw.data.shape)}
    metadata.update(raw.metadata)
    if channel is not None:
        metadata["channel"] = channel
    return Volume(
        data=data,
        # 9 significant digits: drops the noise of rational TIFF tags and unit conversion
        voxel_size=tuple(float(f"{v:.9g}") for v in voxel_size),  # type: ignore[arg-type]
        axes="ZYX",
        source=source,
        metadata=metadata,
    )
