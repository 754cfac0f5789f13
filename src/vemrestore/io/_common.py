"""Pieces shared by the format modules: raw read results, units, error translation."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError

__all__ = [
    "DEFAULT_AXES",
    "LAZY_BYTES",
    "RawArray",
    "describe_arrays",
    "first_line",
    "first_sentence",
    "nm_per_unit",
    "reading_errors",
    "voxel_size_from_attrs",
]

#: Files whose uncompressed size exceeds this open as dask arrays (TIFF, MRC).
LAZY_BYTES = 512 * 2**20

_MAX_LISTED = 20  # arrays named in an error message

#: Axes of arrays whose file does not name them, by number of dimensions.
DEFAULT_AXES = {2: "YX", 3: "ZYX", 4: "CZYX", 5: "TCZYX"}

# Length units as found in ImageJ, OME-XML, OME-NGFF (UDUNITS names) and HDF5 attributes.
_NM_PER_UNIT = {
    "pm": 1e-3,
    "picometer": 1e-3,
    "picometre": 1e-3,
    "å": 0.1,
    "Å": 0.1,
    "angstrom": 0.1,
    "nm": 1.0,
    "nanometer": 1.0,
    "nanometre": 1.0,
    "um": 1e3,
    "µm": 1e3,  # micro sign U+00B5
    "μm": 1e3,  # Greek mu U+03BC
    "\\u00b5m": 1e3,  # ImageJ's escaped form
    "micron": 1e3,
    "microns": 1e3,
    "micrometer": 1e3,
    "micrometre": 1e3,
    "mm": 1e6,
    "millimeter": 1e6,
    "millimetre": 1e6,
    "cm": 1e7,
    "centimeter": 1e7,
    "centimetre": 1e7,
    "m": 1e9,
    "meter": 1e9,
    "metre": 1e9,
}


@dataclass
class RawArray:
    """What a format reader found, before axes are normalised to ZYX.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The array as stored, any number of dimensions.
    axes : str or None
        One upper-case letter per axis (``"CZYX"``, ``"TZCYX"``, ...), or None
        when the file does not say.
    voxel_size : dict
        Voxel size in nm keyed by ``"Z"``, ``"Y"``, ``"X"``; a missing key
        means the file does not give that axis.
    metadata : dict
        Format-specific provenance to keep in ``Volume.metadata``.
    """

    data: Any
    axes: str | None
    voxel_size: dict[str, float] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def nm_per_unit(unit: Any) -> float | None:
    """Nanometres in one ``unit``; None for pixels, empty or unknown units."""
    if not isinstance(unit, str):
        return None
    text = unit.strip()
    return _NM_PER_UNIT.get(text, _NM_PER_UNIT.get(text.lower()))


def voxel_size_from_attrs(attrs: Any, axes: str | None, ndim: int) -> dict[str, float]:
    """Voxel size in nm from attributes ``voxel_size``/``resolution`` (nm) or ``element_size_um``.

    The values follow the array's axis order (``axes``, or CZYX/TCZYX for
    unnamed 4D/5D arrays); three values on a 4D or 5D array are (z, y, x).
    """
    stored_axes = axes or DEFAULT_AXES.get(ndim, "")
    for key, scale in (("voxel_size", 1.0), ("resolution", 1.0), ("element_size_um", 1e3)):
        if key not in attrs:
            continue
        values = np.atleast_1d(np.asarray(attrs[key], dtype=np.float64)).ravel()
        if len(values) == len(stored_axes):
            letters = stored_axes
        elif len(values) == 3:
            letters = "ZYX"
        else:
            continue
        return {a: float(v) * scale for a, v in zip(letters, values, strict=True) if a in "ZYX"}
    return {}


def describe_arrays(arrays: list[Any]) -> str:
    """``"/raw (30, 512, 512) uint8, ..."`` for an error message (at most 20 entries)."""
    if not arrays:
        return "none"
    parts = [f"{a.name} {tuple(a.shape)} {a.dtype}" for a in arrays[:_MAX_LISTED]]
    more = f", ... ({len(arrays) - _MAX_LISTED} more)" if len(arrays) > _MAX_LISTED else ""
    return ", ".join(parts) + more


def first_line(error: BaseException) -> str:
    """The first line of an exception message (library messages can span many lines)."""
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]


@contextmanager
def reading_errors(source: str | Path, kind: str) -> Iterator[None]:
    """Turn a reading library's exception into a one-line `UserInputError` naming ``source``."""
    try:
        yield
    except UserInputError:
        raise
    except (OSError, ValueError, KeyError, IndexError, EOFError, struct.error) as error:
        raise UserInputError(
            f"cannot read {source} as {kind}: {first_line(error)} "
            f"(check that the file is complete and really {kind})"
        ) from error


def first_sentence(text: str) -> str:
    """The first sentence of the first non-empty line of ``text``."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line.split(". ", 1)[0]
