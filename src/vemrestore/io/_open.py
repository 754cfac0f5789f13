"""`open_volume`: any supported file to a ZYX `Volume`."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io._axes import to_zyx
from vemrestore.io._check import UNKNOWN_VOXEL_AXES
from vemrestore.io._common import RawArray, reading_errors
from vemrestore.io._hdf5 import read_hdf5
from vemrestore.io._mrc import read_mrc
from vemrestore.io._paths import format_of, split_dataset_path
from vemrestore.io._tiff import read_tiff
from vemrestore.io._volume import Volume
from vemrestore.io._zarr import read_zarr

__all__ = ["open_volume"]

_KIND = {"tiff": "TIFF", "hdf5": "HDF5", "zarr": "Zarr", "mrc": "MRC"}
#: ``RawArray.metadata`` key of a reader's translation: nm by axis letter (``{"Z": 40.0}``).
TRANSLATION = "translation"


def open_volume(
    path: str | os.PathLike[str],
    *,
    channel: int | None = None,
    voxel_size: Sequence[float] | None = None,
) -> Volume:
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
    voxel_size : sequence of float, optional
        (z, y, x) in nm, used instead of the file's (``--voxel-size``); then
        no axis counts as unknown.

    Returns
    -------
    Volume
        ``data`` of shape (Z, Y, X); ``voxel_size`` (z, y, x) in nm from
        ImageJ or OME-XML metadata (TIFF), ``voxel_size`` / ``resolution`` /
        ``element_size_um`` attributes (HDF5, Zarr), the OME-NGFF ``scale``
        (OME-Zarr) or the header (MRC, Å); ``translation`` (z, y, x) in nm,
        the world position of voxel (0, 0, 0)'s centre, from the OME-XML
        ``Plane`` position of the first plane or ImageJ ``xorigin``/
        ``yorigin``/``zorigin`` (TIFF), the ``translation`` or ``offset``
        attribute in nm (HDF5, as CREMI and gunpowder write it), the NGFF
        ``translation`` (OME-Zarr) or the header ``origin`` (MRC, Å; MRC2014
        sign, as mrcfile and ChimeraX read it), 0 where the file gives none.
        ``metadata`` records the format, the stored axes, the channel and
        ``voxel_size_unknown``: the axes whose size the file does not give.

    Raises
    ------
    UserInputError
        Missing, unreadable, truncated or corrupt file, unknown suffix,
        missing dataset, 2D image, or channel axis without ``channel``.

    Warns
    -----
    UserWarning
        When the file gives no (usable) voxel size for an axis and none is
        passed; that axis is then set to 1 nm.

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
    given = None if voxel_size is None else _given_voxel_size(voxel_size)
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
    if given is not None:
        raw.voxel_size = dict(zip("ZYX", given, strict=True))
    return _to_volume(raw, fmt=fmt, source=source, channel=channel)


def _to_volume(raw: RawArray, *, fmt: str, source: str, channel: int | None) -> Volume:
    """Normalise axes, take the translation and fill in an unknown voxel size (with a warning).

    A reader gives its translation as ``raw.metadata["translation"]``: nm by
    axis letter, like ``raw.voxel_size``; absent axes are at 0.
    """
    dtype = np.dtype(raw.data.dtype)
    if dtype.kind not in "biuf":
        raise UserInputError(
            f"{source} holds {dtype} values; a volume of integers or real numbers is needed"
        )
    data, axes = to_zyx(raw.data, raw.axes, source=source, channel=channel)
    offsets = raw.metadata.pop(TRANSLATION, None) or {}
    translation = tuple(_finite(offsets.get(a, 0.0)) for a in "ZYX")
    missing = [a for a in "ZYX" if not (raw.voxel_size.get(a, 0.0) > 0)]
    if missing:
        where = raw.metadata.get("voxel_size_from")
        why = f" (metadata: {where})" if where else ""
        warnings.warn(
            f"{source} gives no voxel size for axis {', '.join(missing)}{why}; "
            "using 1 nm there, and outputs carry it (where it matters, pass --voxel-size Z,Y,X "
            "in nm, or save the input with its voxel size: "
            "vemrestore.io.write_volume(data, path, voxel_size=(z, y, x)))",
            UserWarning,
            stacklevel=3,
        )
    voxel_size = tuple(1.0 if a in missing else raw.voxel_size[a] for a in "ZYX")
    metadata = {"format": fmt, "stored_axes": axes, "stored_shape": tuple(raw.data.shape)}
    metadata.update(raw.metadata)
    metadata[UNKNOWN_VOXEL_AXES] = "".join(missing)
    if channel is not None:
        metadata["channel"] = channel
    return Volume(
        data=data,
        voxel_size=_rounded(voxel_size),  # type: ignore[arg-type]
        translation=_rounded(translation),  # type: ignore[arg-type]
        axes="ZYX",
        source=source,
        metadata=metadata,
    )


def _rounded(values: Sequence[float]) -> tuple[float, ...]:
    """Nine significant digits: drops the noise of rational TIFF tags and unit conversions."""
    return tuple(float(f"{v:.9g}") + 0.0 for v in values)  # + 0.0: no -0.0


def _finite(value: float) -> float:
    """A translation read from a file; a non-finite one (a broken header) counts as 0."""
    value = float(value)
    return value if np.isfinite(value) else 0.0


def _given_voxel_size(voxel_size: Sequence[float]) -> tuple[float, float, float]:
    """A voxel size passed to `open_volume`: three positive, finite numbers (z, y, x) in nm."""
    try:
        values = tuple(float(v) for v in voxel_size)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 3 or not all(np.isfinite(v) and v > 0 for v in values):
        raise UserInputError(
            f"voxel size must be three positive numbers (z, y, x) in nm, got {voxel_size!r} "
            "(e.g. 40,8,8 for 40 nm sections of 8 nm pixels)"
        )
    return values  # type: ignore[return-value]
