"""TIFF: ImageJ hyperstacks and OME-TIFF (tifffile).

Space: the voxel size from ImageJ ``spacing``/resolution/``unit`` or OME
``PhysicalSize{X,Y,Z}``; the world position of voxel (0, 0, 0) from ImageJ
``xorigin``/``yorigin``/``zorigin`` (in voxels, ImageJ's calibration origin:
position = (index - origin) * size) or the OME ``Plane`` ``Position{X,Y,Z}``
of the first plane (with its unit; OME's default "reference frame" unit is
not a length and is ignored). Both are written back.
"""

from __future__ import annotations

import logging
import math
import re
import weakref
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import tifffile
import zarr

from vemrestore.errors import UserInputError
from vemrestore.io import _common
from vemrestore.io._common import RawArray, nm_per_unit

__all__ = ["BIGTIFF_BYTES", "read_tiff", "write_tiff"]

#: Outputs larger than this (uncompressed) are written as OME BigTIFF instead of ImageJ TIFF.
BIGTIFF_BYTES = 2**31
_IMAGEJ_DTYPES = (np.dtype(np.uint8), np.dtype(np.uint16), np.dtype(np.float32))
# Bytes computed at once when a dask array is written page by page.
_SLAB_BYTES = 256 * 2**20
# tifffile's log messages for a page or tag beyond the end of the file (a broken page chain).
_BROKEN = re.compile(
    r"invalid (page |value )?offset|offset to (first )?page|corrupted tag list|invalid next page"
)


def read_tiff(file: Path) -> RawArray:
    """Read the first series of a TIFF; lazily through tifffile's Zarr store when it is large.

    A single image whose ImageJ or OME metadata give a z spacing is a stack of
    one section (vemrestore writes one so); a truncated or corrupt file (fewer
    images than its metadata announce, or a broken chain of pages) is refused.
    """
    with _tifffile_errors(file) as logged, tifffile.TiffFile(file) as tif:
        if not tif.series:
            raise ValueError("no image found in the file")
        series = tif.series[0]
        axes = series.axes
        shape = tuple(series.shape)
        _check_complete(tif, file, _planes(axes, shape), logged)
        dtype = np.dtype(series.dtype)
        voxel_size, where = _voxel_size(tif)
        translation = _translation(tif, voxel_size)
        lazy = math.prod(shape) * dtype.itemsize > _common.LAZY_BYTES
        data = None if lazy else series.asarray()
        one_section = _is_one_section(tif, axes, shape)
    if lazy:
        store = tifffile.imread(file, aszarr=True, series=0, level=0)
        array = zarr.open_array(store, mode="r")
        weakref.finalize(array, store.close)  # the file stays open while the array is in use
        data = da.from_array(array, chunks="auto")
    if one_section:
        data, axes = data[np.newaxis], f"Z{axes}"
    metadata = {"voxel_size_from": where, "translation": translation}
    return RawArray(data, axes, voxel_size, metadata)


@contextmanager
def _tifffile_errors(file: Path) -> Iterator[list[str]]:
    """Collect (and keep off the terminal) what tifffile logs at ERROR level while reading.

    A reading error after tifffile logged a broken page chain becomes the
    one-line "truncated or corrupt" `UserInputError`.
    """
    logged: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            logged.append(record.getMessage())

    logger = logging.getLogger("tifffile")
    handler = _Collect(logging.ERROR)
    logger.addHandler(handler)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield logged
    except UserInputError:
        raise
    except Exception as error:
        if _broken_chain(logged):
            raise _truncated(file, f"tifffile: {_without_repr(logged[0])}") from error
        raise
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def _planes(axes: str, shape: tuple[int, ...]) -> int:
    """Number of 2D images in a series (every axis but Y, X and samples)."""
    return math.prod(n for a, n in zip(axes, shape, strict=True) if a not in "YXS")


def _expected_images(tif: tifffile.TiffFile) -> int | None:
    """Images in the first series according to ImageJ or OME metadata (None if unknown)."""
    if tif.is_imagej and tif.imagej_metadata is not None:
        return int(tif.imagej_metadata.get("images", 1))
    pixels = _ome_pixels(tif)
    if pixels is None:
        return None
    return math.prod(int(pixels.get(f"Size{a}", 1)) for a in "ZCT")


def _check_complete(tif: tifffile.TiffFile, file: Path, found: int, logged: list[str]) -> None:
    """Raise if the file holds fewer images than announced or its page chain is broken."""
    expected = _expected_images(tif)
    if expected is not None and found < expected:
        raise _truncated(file, f"expected {expected} images, found {found}")
    if _broken_chain(logged):
        raise _truncated(file, f"{found} image(s) readable; tifffile: {_without_repr(logged[0])}")


def _broken_chain(logged: list[str]) -> bool:
    """Whether tifffile logged a page or tag beyond the end of the file."""
    return any(_BROKEN.search(message) for message in logged)


def _truncated(file: Path, detail: str) -> UserInputError:
    return UserInputError(f"{file} is truncated or corrupt ({detail}); copy or save the file again")


def _without_repr(message: str) -> str:
    """A tifffile log message without the ``<tifffile.X ...>`` names of its objects."""
    return re.sub(r"<[^<>]*>\s*", "", message).strip() or message


def _is_one_section(tif: tifffile.TiffFile, axes: str, shape: tuple[int, ...]) -> bool:
    """Whether a single image is a one-section stack: its metadata give a z spacing.

    ImageJ writes ``spacing`` only for stacks, OME ``PhysicalSizeZ`` describes
    sections; vemrestore writes both for every volume, a single section too.
    """
    if _planes(axes, shape) != 1 or "Z" in axes:
        return False
    if tif.is_imagej and tif.imagej_metadata is not None:
        return "spacing" in tif.imagej_metadata
    pixels = _ome_pixels(tif)
    return pixels is not None and pixels.get("PhysicalSizeZ") is not None


def _voxel_size(tif: tifffile.TiffFile) -> tuple[dict[str, float], str]:
    """Voxel size in nm from OME-XML or ImageJ metadata, and which one was used."""
    if tif.is_ome and tif.ome_metadata:
        return _ome_voxel_size(_ome_pixels(tif)), "OME-XML"
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


def _translation(tif: tifffile.TiffFile, voxel_size: dict[str, float]) -> dict[str, float]:
    """Position in nm of voxel (0, 0, 0) by axis, from OME-XML or ImageJ metadata."""
    if tif.is_ome and tif.ome_metadata:
        return _ome_translation(_ome_pixels(tif))
    if tif.is_imagej and tif.imagej_metadata is not None:
        metadata = tif.imagej_metadata
        return {
            a: -float(metadata[f"{a.lower()}origin"]) * voxel_size[a]
            for a in "ZYX"
            if a in voxel_size and isinstance(metadata.get(f"{a.lower()}origin"), int | float)
        }
    return {}


def _ome_translation(pixels: ElementTree.Element | None) -> dict[str, float]:
    """``Position{X,Y,Z}`` (nm) of the first z-plane's ``Plane`` in an OME ``Pixels`` element."""
    planes = [] if pixels is None else [e for e in pixels if e.tag.rsplit("}", 1)[-1] == "Plane"]
    plane = next((e for e in planes if e.get("TheZ", "0") == "0"), None)
    return _ome_lengths(plane, "Position", default_unit="reference frame")


def _ome_lengths(
    element: ElementTree.Element | None, prefix: str, *, default_unit: str
) -> dict[str, float]:
    """Attributes ``{prefix}Z/Y/X`` of an OME element in nm (units ``{prefix}{axis}Unit``)."""
    lengths: dict[str, float] = {}
    for axis in "ZYX" if element is not None else "":
        value = element.get(f"{prefix}{axis}")  # type: ignore[union-attr]
        scale = nm_per_unit(element.get(f"{prefix}{axis}Unit", default_unit))  # type: ignore[union-attr]
        if value is not None and scale is not None:
            lengths[axis] = float(value) * scale
    return lengths


def _ome_pixels(tif: tifffile.TiffFile) -> ElementTree.Element | None:
    """The first ``Pixels`` element of the OME-XML, if the file has one."""
    if not (tif.is_ome and tif.ome_metadata):
        return None
    try:
        root = ElementTree.fromstring(tif.ome_metadata)
    except ElementTree.ParseError:
        return None  # unreadable metadata: no voxel size, no image count
    return next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)


def _ome_voxel_size(pixels: ElementTree.Element | None) -> dict[str, float]:
    """PhysicalSizeX/Y/Z of an OME ``Pixels`` element, in nm (OME's default unit is µm)."""
    return _ome_lengths(pixels, "PhysicalSize", default_unit="µm")


def write_tiff(
    data: Any,
    tmp: Path,
    voxel_size: tuple[float, float, float],
    *,
    ome: bool,
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
) -> None:
    """Write a ZYX array as an ImageJ hyperstack, or as OME-TIFF when ``ome``, the data are
    over `BIGTIFF_BYTES` (then BigTIFF), an image is one pixel wide or high, or the dtype
    is not one ImageJ reads.

    ``translation`` (z, y, x) in nm, the position of voxel (0, 0, 0), is
    written as each OME ``Plane``'s ``Position{X,Y,Z}`` or as ImageJ's
    ``xorigin``/``yorigin``/``zorigin`` (in voxels; omitted when 0).
    """
    vz, vy, vx = voxel_size
    dtype = np.dtype(data.dtype)
    bigtiff = data.size * dtype.itemsize > BIGTIFF_BYTES
    # ImageJ hyperstacks of one-pixel-wide images read back with the wrong axes.
    thin = min(data.shape[1:]) < 2
    if ome or bigtiff or thin or dtype not in _IMAGEJ_DTYPES:
        options: dict[str, Any] = {
            "ome": True,
            "bigtiff": bigtiff,
            "metadata": {
                "axes": "ZYX",
                **{f"PhysicalSize{a}": v for a, v in zip("ZYX", voxel_size, strict=True)},
                **{f"PhysicalSize{a}Unit": "nm" for a in "ZYX"},
                "Plane": _ome_planes(data.shape[0], voxel_size, translation),
            },
        }
    else:
        origin = {
            f"{a}origin": -t / v
            for a, t, v in zip("zyx", translation, voxel_size, strict=True)
            if t != 0
        }
        options = {
            "imagej": True,
            "resolution": (1.0 / vx, 1.0 / vy),
            "metadata": {"spacing": vz, "unit": "nm", "axes": "ZYX", **origin},
        }
    if isinstance(data, np.ndarray):
        tifffile.imwrite(tmp, data, photometric="minisblack", **options)
    else:
        tifffile.imwrite(
            tmp, _slabs(data), shape=data.shape, dtype=dtype, photometric="minisblack", **options
        )


def _ome_planes(
    count: int, voxel_size: tuple[float, float, float], translation: tuple[float, float, float]
) -> dict[str, list[Any]]:
    """OME ``Plane`` attributes of ``count`` z-planes: the position (nm) of each one's origin."""
    tz, ty, tx = translation
    return {
        "PositionZ": [tz + i * voxel_size[0] for i in range(count)],
        "PositionY": [ty] * count,
        "PositionX": [tx] * count,
        **{f"Position{a}Unit": ["nm"] * count for a in "ZYX"},
    }


def _slabs(data: da.Array) -> Iterator[np.ndarray]:
    """Compute a dask volume a few z-slices at a time (bounded memory), in page order."""
    slice_bytes = data.shape[1] * data.shape[2] * data.dtype.itemsize
    step = max(1, min(data.chunksize[0], _SLAB_BYTES // max(slice_bytes, 1)))
    for start in range(0, data.shape[0], step):
        yield np.asarray(data[start : start + step].compute())
