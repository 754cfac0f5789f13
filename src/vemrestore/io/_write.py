"""`write_volume`: a `Volume` or array to TIFF, HDF5, OME-Zarr or MRC, atomically."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from vemrestore.errors import UserInputError
from vemrestore.io._atomic import atomic_output
from vemrestore.io._hdf5 import DEFAULT_DATASET, write_hdf5
from vemrestore.io._mrc import write_mrc
from vemrestore.io._paths import format_of, same_file, split_dataset_path
from vemrestore.io._tiff import write_tiff
from vemrestore.io._volume import Volume
from vemrestore.io._zarr import check_zarr_format, write_zarr

__all__ = ["write_volume"]

#: Default chunk edge for HDF5 and Zarr outputs (clipped to the volume).
DEFAULT_CHUNK = 128
# float64 is stored as float32 in TIFF (ImageJ) and MRC; bool as uint8.
_NARROWED = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.bool_): np.dtype(np.uint8)}
_MRC_DTYPES = tuple(
    np.dtype(t) for t in (np.uint8, np.int8, np.int16, np.uint16, np.float16, np.float32)
)


def write_volume(
    volume: Volume | npt.ArrayLike,
    path: str | os.PathLike[str],
    *,
    voxel_size: Sequence[float] | None = None,
    chunks: Sequence[int] | None = None,
    overwrite: bool = False,
    dtype: npt.DTypeLike | None = None,
    translation: Sequence[float] | None = None,
    zarr_format: int = 3,
    pyramid: bool = True,
) -> Path:
    """Write a ZYX volume with its voxel size and position; it appears only once complete.

    The format follows the suffix: ``.tif``/``.tiff`` (ImageJ hyperstack with
    the voxel size in nm and the position as ``xorigin``/``yorigin``/
    ``zorigin``; OME-TIFF, with the position of each ``Plane``, for
    ``.ome.tif``, for dtypes ImageJ cannot read and, as BigTIFF, above 2 GB),
    ``.h5``/``.hdf5``/``.hdf`` (optionally ``out.h5:/group/dataset``, default
    dataset ``data``; attributes ``voxel_size``, ``resolution`` and
    ``offset`` in nm and ``element_size_um``), ``.zarr`` (Zarr v3 OME-Zarr,
    OME-NGFF 0.5, named after the file without ``.ome``) or ``.mrc``/
    ``.rec``/``.map``/``.st`` (voxel size and origin in Å). Dask arrays are
    written chunk by chunk (TIFF: a few slices at a time), so memory stays
    bounded.

    Parameters
    ----------
    volume : Volume or array of shape (Z, Y, X)
        What to write. A NumPy or dask array needs ``voxel_size``.
    path : str or path-like
        Output file (Zarr: directory). An HDF5 file is replaced as a whole.
    voxel_size : sequence of float, optional
        (z, y, x) in nm; overrides ``volume.voxel_size``.
    chunks : sequence of int, optional
        (z, y, x) chunk shape for HDF5 and Zarr; default 128 per axis (clipped
        to the volume). Not accepted for TIFF and MRC.
    overwrite : bool
        Replace an existing output (only after the new one is complete).
    dtype : dtype, optional
        Store as this dtype. Floats cast to integers are rounded and clipped
        to the integer range; integers are clipped to the target range.
        Without it, float64 becomes float32 in TIFF and MRC, bool uint8.
    translation : sequence of float, optional
        (z, y, x) in nm, the world position of voxel (0, 0, 0)'s centre;
        overrides ``volume.translation`` (a plain array is at 0 without it).
    zarr_format : {3, 2}
        Zarr outputs: 3 writes OME-NGFF 0.5, 2 writes OME-NGFF 0.4 (for older
        tools such as Fiji's n5-ij).
    pyramid : bool
        Zarr outputs: add the multiscale levels down to about 64 voxels.

    Returns
    -------
    pathlib.Path
        The written file or Zarr directory (without any ``:/dataset`` part).

    Raises
    ------
    UserInputError
        Unknown suffix; output equal to the input file; output exists without
        ``overwrite``; directory missing or not writable; a dtype the format
        cannot store; ``chunks`` for TIFF/MRC; writing fails (nothing is then
        left at ``path``).

    Examples
    --------
    >>> import tempfile, pathlib, numpy as np
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "vol.h5"
    >>> write_volume(np.ones((4, 8, 8), np.float32), f"{out}:/raw", voxel_size=(50, 4, 4)).name
    'vol.h5'
    """
    source = os.fspath(path)
    volume = _as_volume(volume, voxel_size, translation)
    file, inner = split_dataset_path(path)
    fmt = format_of(file, source=source)
    if volume.source is not None and same_file(split_dataset_path(volume.source)[0], file):
        raise UserInputError(
            f"output {source} is the input file {volume.source}; choose another output path"
        )
    if inner is not None and fmt != "hdf5":
        raise UserInputError(
            f"output {source}: an inner path is only supported for HDF5 files; "
            f"write the whole store as {file}"
        )
    if chunks is not None and fmt in ("tiff", "mrc"):
        raise UserInputError(
            f"chunks={tuple(chunks)} applies to HDF5 and Zarr outputs, not {file.name}; "
            "drop chunks="
        )
    check_zarr_format(zarr_format)
    data = _cast(volume.data, dtype, fmt=fmt, source=source)
    with atomic_output(file, overwrite=overwrite) as tmp:
        if fmt == "tiff":
            ome = file.name.lower().endswith((".ome.tif", ".ome.tiff"))
            write_tiff(data, tmp, volume.voxel_size, ome=ome, translation=volume.translation)
        elif fmt == "hdf5":
            write_hdf5(
                data,
                tmp,
                volume.voxel_size,
                dataset=inner or DEFAULT_DATASET,
                chunks=_chunk_shape(chunks, volume.shape),
                translation=volume.translation,
            )
        elif fmt == "zarr":
            write_zarr(
                data,
                tmp,
                volume.voxel_size,
                chunks=_chunk_shape(chunks, volume.shape),
                name=file.stem,  # write_ngff_metadata drops a trailing .ome
                translation=volume.translation,
                zarr_format=zarr_format,
                pyramid=pyramid,
            )
        else:
            write_mrc(data, tmp, volume.voxel_size, volume.translation)
    return file


def _as_volume(
    volume: Any, voxel_size: Sequence[float] | None, translation: Sequence[float] | None
) -> Volume:
    """A validated `Volume`; ``voxel_size`` and ``translation`` (z, y, x) in nm override its own."""
    space: dict[str, Any] = {}
    if voxel_size is not None:
        space["voxel_size"] = tuple(voxel_size)
    if translation is not None:
        space["translation"] = tuple(translation)
    if isinstance(volume, Volume):
        return dataclasses.replace(volume, **space) if space else volume
    if voxel_size is None:
        raise UserInputError(
            "voxel_size is required when writing a plain array; pass voxel_size=(z, y, x) in nm"
        )
    data = volume if hasattr(volume, "ndim") and hasattr(volume, "dtype") else np.asarray(volume)
    return Volume(data, **space)


def _cast(data: Any, dtype: npt.DTypeLike | None, *, fmt: str, source: str) -> Any:
    """Cast to ``dtype`` (rounding/clipping into integer ranges) or to what the format stores."""
    target = np.dtype(data.dtype) if dtype is None else np.dtype(dtype)
    if dtype is None and fmt in ("tiff", "mrc"):
        target = _NARROWED.get(target, target)
    if fmt == "mrc" and target not in _MRC_DTYPES:
        raise UserInputError(
            f"MRC cannot store {target} ({source}); pass dtype= one of "
            f"{', '.join(str(t) for t in _MRC_DTYPES)}"
        )
    if target.kind not in "biuf":
        raise UserInputError(f"cannot write {target} values to {source}; pass a numeric dtype=")
    source_dtype = np.dtype(data.dtype)
    if target == source_dtype:
        return data
    if target.kind in "iu" and source_dtype.kind in "iuf":
        info = np.iinfo(target)
        low, high = int(info.min), int(info.max)
        if source_dtype.kind == "f":
            data = np.rint(data)
        else:
            limits = np.iinfo(source_dtype)
            low, high = max(low, int(limits.min)), min(high, int(limits.max))
        data = data.clip(low, high)
    return data.astype(target)


def _chunk_shape(chunks: Sequence[int] | None, shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validated (z, y, x) chunk shape clipped to the volume; 128 per axis by default."""
    if chunks is None:
        return tuple(min(DEFAULT_CHUNK, n) for n in shape)  # type: ignore[return-value]
    values = tuple(int(c) for c in chunks)
    if len(values) != 3 or min(values) < 1:
        raise UserInputError(f"chunks must be three positive integers (z, y, x), got {chunks}")
    return tuple(min(c, n) for c, n in zip(values, shape, strict=True))  # type: ignore[return-value]
