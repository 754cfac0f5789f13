"""Signatures of inputs: tell whether a volume or file changed since a run started.

A resumed run may only continue what an interrupted one began if it reads the
same input. A signature records where the input lives (absolute path), the
size and modification time of the file(s) behind it, and, for a volume, its
shape, dtype and a SHA-256 digest of a deterministic sample of its voxels
(the whole volume when small, else a few tiles read lazily). Run records
compare signatures as JSON; `describe_changes` says in words what differs.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.io._paths import split_dataset_path
from vemrestore.io._volume import Volume

__all__ = ["describe_changes", "file_signature", "source_signature", "volume_signature"]

#: A volume up to this size is digested whole; a larger one through tiles of a sample.
WHOLE_BYTES = 8 * 2**20
#: How many z-planes the sample of a larger volume reads, one tile each.
SAMPLE_PLANES = 8
#: Largest tile side (y and x) of the sample.
TILE_SIDE = 256
#: A file up to this size is digested whole; a larger one through evenly spaced windows.
FILE_WINDOW = 2**20
_ZARR_METADATA = ("zarr.json", ".zarray", ".zgroup", ".zattrs")
_LONG = 48  # a value printed longer than this is reported as "differs"


def source_signature(source: str | None, array_path: str | None = None) -> dict[str, Any]:
    """Where an input lives and the size and modification time of the file(s) behind it.

    Parameters
    ----------
    source : str or None
        What the volume was opened from (``a.tif``, ``f.h5:/ds``, ``s.zarr:/0``);
        None or a path that does not exist (an in-memory volume) has no files.
    array_path : str, optional
        The array inside a Zarr store, when it differs from the one ``source``
        names (OME-Zarr level 0).

    Returns
    -------
    dict
        ``path`` (absolute, with the inner dataset) and ``files``: one
        ``[path, size, mtime_ns]`` per file, for a Zarr store its metadata
        files along the way to the array.
    """
    if source is None:
        return {"path": None, "files": []}
    file, inner = split_dataset_path(source)
    if not file.exists():
        return {"path": source, "files": []}
    file = file.resolve()
    path = str(file) if inner is None else f"{file}:/{inner}"
    if file.is_dir():
        files = _zarr_metadata_files(file, array_path or inner)
    else:
        files = [file]
    return {"path": path, "files": [_stat(f) for f in files]}


def volume_signature(volume: Volume) -> dict[str, Any]:
    """The `source_signature` of ``volume`` with its shape, dtype and a sampled content digest.

    The digest covers the whole volume up to 8 MiB, else one tile of at most
    256 x 256 voxels in each of 8 evenly spaced z-planes, placed along the
    volume's diagonal and aligned to the lazy array's chunks, so that huge
    volumes are signed by reading a few chunks.

    Examples
    --------
    >>> import numpy as np
    >>> a = Volume(np.zeros((4, 8, 8), np.uint8))
    >>> b = Volume(np.ones((4, 8, 8), np.uint8))
    >>> volume_signature(a)["shape"], volume_signature(a) == volume_signature(b)
    ([4, 8, 8], False)
    """
    signature = source_signature(volume.source, volume.metadata.get("array"))
    signature.update(
        shape=list(volume.shape),
        dtype=volume.dtype.name,
        sample_sha256=_sample_digest(volume.data, volume.shape, volume.dtype.itemsize),
    )
    return signature


def file_signature(path: str | Path) -> dict[str, Any]:
    """The `source_signature` of one file with a SHA-256 digest of its bytes.

    Files up to 8 MiB are digested whole, larger ones through 8 windows of
    1 MiB evenly spaced over the file (weights, masks).
    """
    signature = source_signature(str(path))
    file = Path(path)
    signature["sha256"] = _file_digest(file) if file.is_file() else None
    return signature


def describe_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], labels: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """What differs between two run records, in words.

    Parameters
    ----------
    old, new : mapping
        JSON-ready records; entries holding signatures (from this module) are
        described as changed inputs, nested settings by their dotted name.
    labels : mapping of str to str, optional
        Words for the entries (dotted names or their prefixes), e.g.
        ``{"config": "the method settings"}``; others are "the settings".

    Returns
    -------
    subject : str
        What changed (``"the input /data/a.tif"``), several joined by "and".
    details : str
        How (``"content differs"``), several joined by "; ".

    Examples
    --------
    >>> describe_changes({"seed": 1, "steps": 5}, {"seed": 2, "steps": 5})
    ('the settings', 'seed: 1 -> 2')
    """
    old, new = _as_json(old), _as_json(new)
    subjects: list[str] = []
    details: list[str] = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if _is_signature(a) and _is_signature(b):
            subject = f"the {key} {b['path'] or '(in memory)'}"
            detail = _signature_change(a, b)
        else:
            leaves = _leaf_changes(key, a, b)
            subject = _label(leaves[0][0], labels or {})
            detail = ", ".join(_describe_leaf(*leaf) for leaf in leaves)
        if subject not in subjects:
            subjects.append(subject)
        details.append(detail)
    return " and ".join(subjects), "; ".join(details)


def _stat(file: Path) -> list[Any]:
    stat = file.stat()
    return [str(file), stat.st_size, stat.st_mtime_ns]


def _zarr_metadata_files(store: Path, array_path: str | None) -> list[Path]:
    """The metadata files of a Zarr store's root and of each group down to the array."""
    parts = [p for p in (array_path or "").split("/") if p]
    folders = [store] + [store.joinpath(*parts[: i + 1]) for i in range(len(parts))]
    return [f / name for f in folders for name in _ZARR_METADATA if (f / name).is_file()]


def _sample_digest(data: Any, shape: tuple[int, int, int], itemsize: int) -> str:
    digest = hashlib.sha256()
    regions = _sample_regions(data, shape, itemsize)
    for region, tile in zip(regions, _read(data, regions), strict=True):
        digest.update(json.dumps([[s.start, s.stop] for s in region]).encode())
        digest.update(np.ascontiguousarray(tile).tobytes())
    return digest.hexdigest()


def _sample_regions(
    data: Any, shape: tuple[int, int, int], itemsize: int
) -> list[tuple[slice, slice, slice]]:
    """The whole volume when small, else one chunk-aligned tile in each of a few z-planes."""
    if math.prod(shape) * itemsize <= WHOLE_BYTES:
        return [tuple(slice(0, n) for n in shape)]  # type: ignore[list-item]
    depth, height, width = shape
    count = min(depth, SAMPLE_PLANES)
    planes = sorted({round(i * (depth - 1) / max(count - 1, 1)) for i in range(count)})
    grid = getattr(data, "chunks", None)
    regions = []
    for i, z in enumerate(planes):
        fraction = (i + 0.5) / len(planes)  # along the diagonal: a different place per plane
        y = _tile(height, fraction, grid[1] if _is_chunk_grid(grid) else None)
        x = _tile(width, fraction, grid[2] if _is_chunk_grid(grid) else None)
        regions.append((slice(z, z + 1), y, x))
    return regions


def _is_chunk_grid(grid: Any) -> bool:
    """Dask's chunks: one tuple of chunk lengths per axis."""
    return isinstance(grid, tuple) and len(grid) == 3 and all(isinstance(c, tuple) for c in grid)


def _tile(length: int, fraction: float, chunks: tuple[int, ...] | None) -> slice:
    """A tile of at most TILE_SIDE at ``fraction`` of an axis, started at a chunk's origin."""
    start = int(fraction * length)
    if chunks:
        edges = np.cumsum((0, *chunks))
        start = int(edges[np.searchsorted(edges, start, side="right") - 1])
    start = min(start, max(length - TILE_SIDE, 0))
    return slice(start, min(start + TILE_SIDE, length))


def _read(data: Any, regions: list[tuple[slice, slice, slice]]) -> list[np.ndarray]:
    """The voxels of each region; a dask array is computed here, in this process."""
    tiles = [data[region] for region in regions]
    if hasattr(data, "dask"):
        import dask

        tiles = list(dask.compute(*tiles, scheduler="synchronous"))
    return [np.asarray(tile) for tile in tiles]


def _file_digest(file: Path) -> str:
    digest = hashlib.sha256()
    size = file.stat().st_size
    with file.open("rb") as handle:
        if size <= WHOLE_BYTES:
            digest.update(handle.read())
        else:
            for i in range(SAMPLE_PLANES):
                handle.seek(i * (size - FILE_WINDOW) // (SAMPLE_PLANES - 1))
                digest.update(handle.read(FILE_WINDOW))
    return digest.hexdigest()


def _as_json(record: Mapping[str, Any]) -> dict[str, Any]:
    """Compare as stored: tuples become lists."""
    return json.loads(json.dumps(dict(record)))


def _is_signature(value: Any) -> bool:
    return isinstance(value, dict) and {"path", "files"} <= value.keys()


def _signature_change(old: dict[str, Any], new: dict[str, Any]) -> str:
    if old["path"] != new["path"]:
        return f"it was {old['path'] or '(in memory)'}"
    for key in ("shape", "dtype"):
        if old.get(key) != new.get(key):
            return f"{key} {_compact(old.get(key))} -> {_compact(new.get(key))}"
    for key in ("sample_sha256", "sha256"):
        if old.get(key) != new.get(key):
            return "content differs"
    return "modified: size or modification time differs"


def _leaf_changes(path: str, old: Any, new: Any) -> list[tuple[str, Any, Any]]:
    """The dotted names and values of the differing leaves of two JSON values."""
    if isinstance(old, dict) and isinstance(new, dict):
        leaves = []
        for key in sorted(old.keys() | new.keys()):
            if old.get(key) != new.get(key):
                leaves += _leaf_changes(f"{path}.{key}", old.get(key), new.get(key))
        return leaves
    return [(path, old, new)]


def _describe_leaf(path: str, old: Any, new: Any) -> str:
    a, b = _compact(old), _compact(new)
    if len(a) > _LONG or len(b) > _LONG:
        return f"{path} differs"
    return f"{path}: {a} -> {b}"


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _label(path: str, labels: Mapping[str, str]) -> str:
    """The words for ``path``: its own label, else its closest labelled prefix."""
    parts = path.split(".")
    for end in range(len(parts), 0, -1):
        label = labels.get(".".join(parts[:end]))
        if label is not None:
            return label
    return "the settings"
