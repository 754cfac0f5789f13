"""TIFF: ImageJ hyperstacks and OME-TIFF (tifffile)."""

from __future__ import annotations

import math
import weakref
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from vemrestore.io import _common
from vemrestore.io._common import RawArray, nm_per_unit

__all__ = ["BIGTIFF_BYTES", "read_tiff", "write_tiff"]

#: Outputs larger than this (uncompressed) are written as OME BigTIFF instead of ImageJ TIFF.
BIGTIFF_BYTES = 2**31
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
# Bytes computed at once when a dask array is written page by page.
_SLAB_BYTES = 256 * 2**20


def read_tiff(file: Path) -> RawArray:
    """Read the first series of a TIFF; lazily through tifffile's Zarr store when it is large."""
    with tifffile.TiffFile(file) as tif:
        if not tif.series:
            raise ValueError("no image found in the file")
        series = tif.series[0]
        axes = series.axes
        shape = tuple(series.shape)
        dtype = np.dtype(series.dtype)
        voxel_size, where = _voxel_size(tif)
        lazy = math.prod(shape) * dtype.itemsize > _common.LAZY_BYTES
        data = None if lazy else series.asarray()
    if lazy:
        store = tifffile.imread(file, aszarr=True, series=0, level=0)
        array = zarr.open_array(store, mode="r")
        weakref.finalize(array, store.close)  # the file stays open while the array is in use
        data = da.from_array(array, chunks="auto")
    return RawArray(data, axes, voxel_size, {"voxel_size_from": where})


def _voxel_size(tif: tifffile.TiffFile) -> tuple[dict[str, float], str]:
    """Voxel size in nm from OME-XML or ImageJ metadata, and which one was used."""
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel_size(tif.ome_metadata), "OME-XML"
    if tif.is_imagej and tif.imagej_metadata is not None:
        metadata = tif.imagej_metadata
        scale = nm_per_unit(metadata.get("unit"))
        if scale is None:
            return {}, f"ImageJ (unit {metadata.get('unit')!r} is not a length)"
        xres, yres = tif.pages.first.get_resolution()
        return {
            "Z": float(metadata.get("spacing", 1.0)) * scale,
            "Y": scale / float(yres),
            "X": scale / float(xres),
        }, "ImageJ"
    return {}, "none (no ImageJ or OME metadata)"


def _ome_voxel_size(xml: str) -> dict[str, float]:
    """PhysicalSizeX/Y/Z of the first OME ``Pixels`` element, in nm (OME's default unit is µm)."""
    root = ElementTree.fromstring(xml)
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return {}
    sizes = {}
    for axis in "ZYX":
        value = pixels.get(f"PhysicalSize{axis}")
        scale = nm_per_unit(pixels.get(f"PhysicalSize{axis}Unit", "µm"))
        if value is not None and scale is not None:
            sizes[axis] = float(value) * scale
    return sizes


def write_tiff(data: Any, tmp: Path, voxel_size: tuple[float, float, float], *, ome: bool) -> None:
    """Write a ZYX array as an ImageJ hyperstack, or as OME-TIFF when ``ome``, the data are
    over `BIGTIFF_BYTES` (then BigTIFF) or the dtype is not one ImageJ reads.
    """
    vz, vy, vx = voxel_size
    dtype = np.dtype(data.dtype)
    bigtiff = data.size * dtype.itemsize > BIGTIFF_BYTES
    if ome or bigtiff or dtype not in _IMAGEJ_DTYPES:
        options: dict[str, Any] = {
            "ome": True,
            "bigtiff": bigtiff,
            "metadata": {
                "axes": "ZYX",
                **{f"PhysicalSize{a}": v for a, v in zip("ZYX", voxel_size, strict=True)},
                **{f"PhysicalSize{a}Unit": "nm" for a in "ZYX"},
            },
        }
    else:
        options = {
            "imagej": True,
            "resolution": (1.0 / vx, 1.0 / vy),
            "metadata": {"spacing": vz, "unit": "nm", "axes": "ZYX"},
        }
    if isinstance(data, np.ndarray):
        tifffile.imwrite(tmp, data, photometric="minisblack", **options)
    else:
        tifffile.imwrite(
            tmp, _slabs(data), shape=data.shape, dtype=dtype, photometric="minisblack", **options
        )


def _slabs(data: da.Array) -> Iterator[np.ndarray]:
    """Compute a dask volume a few z-slices at a time (bounded memory), in page order."""
    slice_bytes = data.shape[1] * data.shape[2] * data.dtype.itemsize
    step = max(1, min(data.chunksize[0], _SLAB_BYTES // max(slice_bytes, 1)))
    for start in range(0, data.shape[0], step):
        yield np.asarray(data[start : start + step].compute())
