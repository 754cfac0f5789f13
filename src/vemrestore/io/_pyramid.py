"""OME-Zarr multiscale pyramids: which levels, their geometry, and writing them blockwise.

A pyramid is built from the written full-resolution level ``"0"``: each level
is the 2 x mean (``ngff-zarr``'s ``DASK_BIN_SHRINK``, ``dask.array.coarsen``)
of the level before it, read lazily from the store chunk by chunk, so memory
is bounded by a few chunks whatever the volume size.

Which axes a level halves (`plan_pyramid`): only axes at least
``2 * min_size`` voxels long (levels stop at about ``min_size`` = 64 voxels);
among them, while the voxel is anisotropic, only the axes whose voxel is
clearly finer than the coarsest (by more than sqrt(2)), so the levels move
towards isotropic voxels in physical space; once it is (about) isotropic,
all of them. Each level's ``scale`` is the level-0 voxel size times the
accumulated factor, and its ``translation`` moves by half a voxel of the
finer level per 2 x mean (the centre of a 2-voxel mean lies between them).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dask.array as da
import numcodecs
import zarr

__all__ = [
    "NGFF_DIMENSIONS",
    "PYRAMID_MIN_SIZE",
    "PyramidLevel",
    "create_level_array",
    "plan_pyramid",
    "write_pyramid",
]

#: ``dimension_names`` for the level arrays of an OME-Zarr (v3) volume.
NGFF_DIMENSIONS = ("z", "y", "x")

#: Levels go down to about this many voxels along each axis.
PYRAMID_MIN_SIZE = 64

# Zarr v2 (OME-NGFF 0.4) levels: what older readers (Fiji n5-ij, zarr-python 2) expect.
_V2_CHUNK_KEYS = {"name": "v2", "separator": "/"}
_V2_COMPRESSOR = numcodecs.Blosc(cname="lz4", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)


@dataclass(frozen=True)
class PyramidLevel:
    """One level of an OME-Zarr multiscale image.

    Attributes
    ----------
    path : str
        Array path in the group (``"0"`` for full resolution).
    shape : tuple of int
        (z, y, x) voxels.
    voxel_size : tuple of float
        (z, y, x) in nm: the level's ``scale``.
    translation : tuple of float
        (z, y, x) in nm: world position of the level's voxel (0, 0, 0) centre.
    factors : tuple of int
        Downsampling factor per axis from the previous level ((1, 1, 1) for level 0).
    """

    path: str
    shape: tuple[int, int, int]
    voxel_size: tuple[float, float, float]
    translation: tuple[float, float, float]
    factors: tuple[int, int, int] = (1, 1, 1)


def plan_pyramid(
    shape: Sequence[int],
    voxel_size: Sequence[float],
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    *,
    min_size: int = PYRAMID_MIN_SIZE,
) -> list[PyramidLevel]:
    """The levels of a pyramid over a (z, y, x) volume, level 0 first.

    Parameters
    ----------
    shape : sequence of int
        Level-0 shape (z, y, x).
    voxel_size : sequence of float
        Level-0 voxel size (z, y, x) in nm.
    translation : sequence of float
        Level-0 translation (z, y, x) in nm.
    min_size : int
        An axis is halved only while it has at least ``2 * min_size`` voxels.

    Returns
    -------
    list of PyramidLevel
        Level 0 (path ``"0"``) and each coarser level (``"1"``, ``"2"``, ...);
        only level 0 when no axis is long enough.

    Examples
    --------
    >>> levels = plan_pyramid((200, 512, 512), (40.0, 10.0, 10.0), (0.0, 5.0, 5.0))
    >>> for level in levels[1:]:
    ...     print(level.path, level.shape, level.voxel_size)
    1 (200, 256, 256) (40.0, 20.0, 20.0)
    2 (200, 128, 128) (40.0, 40.0, 40.0)
    3 (100, 64, 64) (80.0, 80.0, 80.0)
    >>> levels[1].translation  # a 2-voxel mean is centred between the two
    (0.0, 10.0, 10.0)
    """
    level = PyramidLevel(
        "0",
        tuple(int(n) for n in shape),  # type: ignore[arg-type]
        tuple(float(v) for v in voxel_size),  # type: ignore[arg-type]
        tuple(float(t) for t in translation),  # type: ignore[arg-type]
    )
    levels = [level]
    while (factors := _next_factors(level.shape, level.voxel_size, min_size)) is not None:
        level = PyramidLevel(
            str(len(levels)),
            tuple(n // f for n, f in zip(level.shape, factors, strict=True)),  # type: ignore[arg-type]
            tuple(v * f for v, f in zip(level.voxel_size, factors, strict=True)),  # type: ignore[arg-type]
            tuple(
                t + 0.5 * (f - 1) * v
                for t, v, f in zip(level.translation, level.voxel_size, factors, strict=True)
            ),  # type: ignore[arg-type]
            factors,
        )
        levels.append(level)
    return levels


def _next_factors(
    shape: tuple[int, ...], voxel_size: tuple[float, ...], min_size: int
) -> tuple[int, int, int] | None:
    """Factor 2 along the axes the next level halves, or None when none can be."""
    allowed = [n >= 2 * min_size for n in shape]
    coarsest = max(voxel_size)
    fine = [2 * v <= coarsest * math.sqrt(2) for v in voxel_size]
    preferred = fine if any(fine) else [True] * len(shape)
    chosen = [p and a for p, a in zip(preferred, allowed, strict=True)]
    if not any(chosen):  # the finer axes are too short: halve what the size allows
        chosen = allowed
    if not any(chosen):
        return None
    return tuple(2 if c else 1 for c in chosen)  # type: ignore[return-value]


def create_level_array(
    group: zarr.Group,
    path: str,
    shape: Sequence[int],
    dtype: Any,
    chunks: Sequence[int],
) -> zarr.Array:
    """Create (or replace) an empty OME-Zarr level array in ``group``.

    Zarr v3 levels get ``dimension_names`` (z, y, x) as OME-NGFF 0.5 asks;
    Zarr v2 levels use the ``"/"`` dimension separator and Blosc compression
    (OME-NGFF 0.4, readable by Fiji's n5-ij and zarr-python 2). Chunks are
    clipped to the shape.

    Parameters
    ----------
    group : zarr.Group
        Opened for writing.
    path : str
        Array path in the group.
    shape : sequence of int
        (z, y, x).
    dtype : dtype
        Stored dtype.
    chunks : sequence of int
        Chunk shape (z, y, x).

    Returns
    -------
    zarr.Array
        Filled with zeros (fill value 0).
    """
    shape = tuple(int(n) for n in shape)
    chunks = tuple(max(1, min(int(c), n)) for c, n in zip(chunks, shape, strict=True))
    if group.metadata.zarr_format == 3:
        options: dict[str, Any] = {"dimension_names": NGFF_DIMENSIONS}
    else:
        options = {"chunk_key_encoding": _V2_CHUNK_KEYS, "compressors": _V2_COMPRESSOR}
    return group.create_array(
        path, shape=shape, dtype=dtype, chunks=chunks, fill_value=0, overwrite=True, **options
    )


def write_pyramid(
    group: zarr.Group, levels: Sequence[PyramidLevel], *, num_workers: int | None = None
) -> None:
    """Write ``levels[1:]`` into ``group``, each the 2 x mean of the level before it.

    Level 0 (``levels[0].path``) must be written. Each level is computed
    blockwise by ``ngff-zarr`` from the stored level before it (a lazy dask
    array) and stored chunk by chunk with the same chunk shape as level 0,
    so memory stays bounded. Levels of an earlier pyramid beyond the last of
    ``levels`` are deleted, so a rebuilt pyramid never keeps stale levels.

    Parameters
    ----------
    group : zarr.Group
        Opened for writing, holding level 0.
    levels : sequence of PyramidLevel
        From `plan_pyramid`.
    num_workers : int, optional
        Local threads; default: dask's (one per core).
    """
    # Levels are "0", "1", ...: stale ones follow the last wanted. (Probing, not listing:
    # the group may hold other folders, such as a run's ledger.)
    index = len(levels)
    while str(index) in group:
        del group[str(index)]
        index += 1
    if len(levels) < 2:
        return
    from ngff_zarr import Methods, to_multiscales, to_ngff_image

    chunks = group[levels[0].path].chunks
    for previous, level in itertools.pairwise(levels):
        source = group[previous.path]
        image = to_ngff_image(
            da.from_array(source, chunks=source.chunks),
            dims=NGFF_DIMENSIONS,
            scale=dict(zip(NGFF_DIMENSIONS, previous.voxel_size, strict=True)),
            translation=dict(zip(NGFF_DIMENSIONS, previous.translation, strict=True)),
        )
        factors = dict(zip(NGFF_DIMENSIONS, level.factors, strict=True))
        target = create_level_array(group, level.path, level.shape, source.dtype, chunks)
        multiscales = to_multiscales(
            image,
            scale_factors=[factors],
            method=Methods.DASK_BIN_SHRINK,
            chunks=target.chunks,
            cache=False,
        )
        data = multiscales.images[1].data
        if tuple(data.shape) != level.shape:  # pragma: no cover - a planning bug
            raise RuntimeError(f"pyramid level {level.path}: {data.shape} != {level.shape}")
        da.store(data, target, lock=False, scheduler="threads", num_workers=num_workers)
