"""Figure material for the report: crops of every method on the same place, curves, labels.

Stored in the benchmark JSON (``"figures"``) as base64 PNG crops, so the report
(`vemrestore report`) needs nothing but that file.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["CROP_SIDE", "axial_figure"]

CROP_SIDE = 128  # pixels in y and x of the crops shown


def _to_uint8(plane: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (np.asarray(plane, dtype=np.float32) - low) / max(high - low, 1e-12)
    return np.clip(np.round(scaled * 255), 0, 255).astype(np.uint8)


def _relabelled(crop: np.ndarray) -> np.ndarray:
    """The crop's labels as 0..n-1 in uint16 (n < 65536 in any crop shown), order kept."""
    return np.unique(crop, return_inverse=True)[1].reshape(crop.shape).astype(np.uint16)


def _crop_slices(shape: tuple[int, ...]) -> tuple[slice, slice]:
    def centred(size: int) -> slice:
        side = min(CROP_SIDE, size)
        start = (size - side) // 2
        return slice(start, start + side)

    return centred(shape[1]), centred(shape[2])


def axial_figure(
    *,
    dataset: str,
    factor: float,
    volumes: Mapping[str, np.ndarray],
    segmentations: Mapping[str, np.ndarray] | None = None,
    frc: Mapping[str, Any] | None = None,
    spectra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One ``figures`` entry: XY/XZ/YZ crops of each named volume at the same place.

    Parameters
    ----------
    volumes : mapping of str to numpy.ndarray
        Name -> (Z, Y, X) volume on one grid; the first is the truth (its
        0.5/99.5 percentiles set the grey range of all).
    segmentations : mapping, optional
        Name -> labels of the same volumes (XZ crop stored).
    frc, spectra : mapping, optional
        Name -> curve dicts, stored as they are.
    """
    from vemrestore.report import encode_png

    first = next(iter(volumes.values()))
    low, high = (float(v) for v in np.percentile(first, [0.5, 99.5]))
    ys, xs = _crop_slices(first.shape)
    z, y, x = first.shape[0] // 2, (ys.start + ys.stop) // 2, (xs.start + xs.stop) // 2

    def planes(vol: np.ndarray) -> dict[str, np.ndarray]:
        return {"xy": vol[z, ys, xs], "xz": vol[:, y, xs], "yz": vol[:, ys, x]}

    figure: dict[str, Any] = {
        "dataset": dataset,
        "factor": float(factor),
        "title": f"{dataset}, x{factor:g}: planes through z={z}, y={y}, x={x}",
        "planes": {
            name: {o: encode_png(_to_uint8(p, low, high)) for o, p in planes(vol).items()}
            for name, vol in volumes.items()
        },
    }
    if segmentations:
        figure["segmentations"] = {
            name: {"xz": encode_png(_relabelled(labels[:, y, xs]))}
            for name, labels in segmentations.items()
        }
    if frc:
        figure["frc"] = dict(frc)
    if spectra:
        figure["spectra"] = dict(spectra)
    return figure
