"""MRC (mrcfile): tomograms and maps; voxel size and origin in Å in the header.

The header ``origin`` (x, y, z in Å) is taken as the world position of
voxel (0, 0, 0), the real-space origin of the MRC2014 standard that mrcfile
implements and ChimeraX reads; some programs (IMOD among them) have used
the opposite sign, so check overlays of their files there.
``nxstart``/``nystart``/``nzstart`` are not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dask.array as da
import mrcfile
import numpy as np

from vemrestore.io import _common
from vemrestore.io._common import RawArray

__all__ = ["read_mrc", "write_mrc"]

# IMOD's header convention (bytes 152-159, i.e. 40-47 of ``extra2``): with the stamp
# present and flag bit 1 clear, mode-0 bytes are unsigned.
_IMOD_STAMP = 1146047817
_IMOD_SIGNED_BYTES = 1
_IMOD_OFFSET = 40
_NM_PER_ANGSTROM = 0.1


def read_mrc(file: Path) -> RawArray:
    """Read an MRC file through a memory map; copy it into memory unless it is large."""
    with mrcfile.mmap(file, mode="r") as mrc:
        header = mrc.header
        mode = int(header.mode)
        stored = mrc.data
        dtype = stored.dtype.newbyteorder("=")  # native byte order in memory
        if mode == 0 and _imod_unsigned_bytes(header):
            dtype = np.dtype(np.uint8)
        # Axes of the stored array, slowest first: sections, rows, columns.
        maps = (int(header.maps), int(header.mapr), int(header.mapc))
        axes = "".join("XYZ"[m - 1] for m in maps) if sorted(maps) == [1, 2, 3] else "ZYX"
        axes = axes if stored.ndim == 3 else None
        size, origin = mrc.voxel_size, header.origin
        voxel_size = {
            a: float(v) * _NM_PER_ANGSTROM
            for a, v in (("Z", size.z), ("Y", size.y), ("X", size.x))
            if v > 0
        }
        translation = {a: float(origin[a.lower()]) * _NM_PER_ANGSTROM for a in "ZYX"}
        if stored.nbytes > _common.LAZY_BYTES:
            data = np.memmap(file, stored.dtype, mode="r", offset=stored.offset, shape=stored.shape)
        else:
            data = np.array(stored)
    if dtype == np.uint8:
        data = data.view(np.uint8)
    if isinstance(data, np.memmap):
        data = da.from_array(data, chunks="auto")
    if data.dtype != dtype:
        data = data.astype(dtype)
    return RawArray(data, axes, voxel_size, {"mrc_mode": mode, "translation": translation})


def _imod_unsigned_bytes(header: Any) -> bool:
    """Whether IMOD's header flags say mode-0 bytes are unsigned."""
    extra = bytes(header.extra2)[_IMOD_OFFSET : _IMOD_OFFSET + 8]
    stamp, flags = np.frombuffer(extra, dtype=header.mode.dtype)
    return int(stamp) == _IMOD_STAMP and not int(flags) & _IMOD_SIGNED_BYTES


def write_mrc(
    data: Any,
    tmp: Path,
    voxel_size: tuple[float, float, float],
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> None:
    """Write a ZYX array as an MRC volume (voxel size and origin in Å, uint8 as IMOD unsigned
    mode 0); the origin is ``translation``, the position (nm) of voxel (0, 0, 0).
    """
    dtype = np.dtype(data.dtype)
    unsigned_bytes = dtype == np.uint8
    mode = 0 if unsigned_bytes else mrcfile.utils.mode_from_dtype(dtype)
    with mrcfile.new_mmap(tmp, shape=data.shape, mrc_mode=mode, overwrite=True) as mrc:
        target = mrc.data.view(np.uint8) if unsigned_bytes else mrc.data
        if isinstance(data, np.ndarray):
            target[...] = data
        else:
            da.store(data, target, lock=False)
        mrc.set_volume()
        vz, vy, vx = voxel_size
        mrc.voxel_size = (vx / _NM_PER_ANGSTROM, vy / _NM_PER_ANGSTROM, vz / _NM_PER_ANGSTROM)
        header = mrc.header
        for axis, value in zip("zyx", translation, strict=True):
            header.origin[axis] = value / _NM_PER_ANGSTROM
        if unsigned_bytes:
            extra = bytearray(bytes(header.extra2))
            stamp = np.array([_IMOD_STAMP, 0], dtype=header.mode.dtype).tobytes()
            extra[_IMOD_OFFSET : _IMOD_OFFSET + 8] = stamp
            header.extra2 = bytes(extra)
        # Statistics from the written file, block by block (never recomputes a lazy input).
        written = da.from_array(target, chunks="auto")
        stats = da.compute(
            written.min(),
            written.max(),
            written.mean(dtype=np.float64),
            written.std(dtype=np.float64),
        )
        header.dmin, header.dmax, header.dmean, header.rms = (float(v) for v in stats)
