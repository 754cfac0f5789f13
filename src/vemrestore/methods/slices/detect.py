"""Find missing and damaged sections in a serial-section stack, with reasons.

Three tests, each calibrated on the stack itself by robust statistics
(median and MAD), so no threshold depends on the intensity scale:

1. *Blank*: a section whose intensity span (99th - 1st percentile) is a
   small fraction of the typical span, or that is mostly non-finite.
2. *Outlier*: a section far from both neighbours, i.e. the smaller of its
   mean absolute differences to the sections above and below exceeds the
   difference between those two neighbours by far more than is usual in the
   stack; or a section whose contrast (standard deviation) departs from its
   neighbours' far more than usual.
3. *Local damage*: pixels where a section departs from both neighbours
   (smoothed absolute differences) far more than the same pixel does in the
   surrounding sections (per-pixel median and MAD over a window of
   sections). Seeds above a high threshold grow into a lower one
   (hysteresis), small components are dropped and masks are dilated. The
   first and last sections, with one neighbour only, are not tested.

Local damage is found reliably where neighbouring sections are similar
(FIB-SEM, thin serial sections); in thick ssTEM sections (ISBI 2012, 50 nm)
the normal change between sections is as large as most damage, and only
strong defects are found: pass masks there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold

from vemrestore.errors import UserInputError

__all__ = ["DetectionResult", "detect_damage"]

_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class DetectionResult:
    """Sections and regions that ``detect_damage`` flagged.

    Attributes
    ----------
    missing : tuple of int
        Sections to restore whole, sorted.
    partial : dict of int to numpy.ndarray
        Boolean (Y, X) masks of local damage in sections not in ``missing``.
    reasons : dict of int to str
        Why each flagged section (whole or partial) was flagged.
    """

    missing: tuple[int, ...]
    partial: dict[int, np.ndarray] = field(repr=False)
    reasons: dict[int, str]


def _robust_z(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(values - median) / (1.4826 MAD) over ``valid`` entries; the MAD is floored."""
    ref = values[valid]
    if ref.size == 0:
        return np.zeros_like(values)
    med = np.median(ref)
    mad = np.median(np.abs(ref - med))
    scale = _MAD_TO_SIGMA * max(mad, 1e-3 * abs(med), 1e-12)
    return (values - med) / scale


def _check_thresholds(**values: float) -> None:
    for name, value in values.items():
        if not np.isfinite(value) or value <= 0:
            raise UserInputError(f"{name} must be a positive number, got {value}")


def detect_damage(
    volume: Any,
    *,
    blank_fraction: float = 0.05,
    outlier_threshold: float = 8.0,
    local: bool = True,
    local_threshold: float = 12.0,
    local_grow: float = 4.0,
    min_area: int = 50,
    dilation: int = 2,
    sigma: float = 1.5,
    window: int = 10,
) -> DetectionResult:
    """Detect blank, outlying and locally damaged sections of a (Z, Y, X) stack.

    Parameters
    ----------
    volume : array-like, shape (Z, Y, X)
        The stack (loaded into memory as float32); at least 3 sections.
    blank_fraction : float
        A section is blank when its intensity span is below this fraction of
        the median span (or more than half of it is NaN/inf).
    outlier_threshold : float
        Robust z-score (in MAD-sigmas) above which a section is an outlier.
    local : bool
        Also look for local damage.
    local_threshold, local_grow : float
        Per-pixel robust z-scores that seed a damaged region and that it
        grows into.
    min_area : int
        Smallest damaged region kept, in pixels (of the seed part).
    dilation : int
        Pixels added around each damaged region.
    sigma : float
        Gaussian smoothing (pixels) of the differences between sections.
    window : int
        Sections each side used for the per-pixel statistics.

    Returns
    -------
    DetectionResult

    Raises
    ------
    UserInputError
        If the volume is not 3D with at least 3 sections, or an option is out of range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> stack = rng.normal(100, 10, (12, 32, 32)).astype(np.float32)
    >>> stack[5] = 0
    >>> detect_damage(stack, local=False).missing
    (5,)
    """
    data = np.asarray(volume, dtype=np.float32)
    if data.ndim != 3 or data.shape[0] < 3:
        raise UserInputError(
            f"detection needs a (Z, Y, X) stack with at least 3 sections, got shape {data.shape}"
        )
    _check_thresholds(
        blank_fraction=blank_fraction,
        outlier_threshold=outlier_threshold,
        local_threshold=local_threshold,
        local_grow=local_grow,
        sigma=sigma,
    )
    if min_area < 1 or dilation < 0 or window < 1:
        raise UserInputError(
            f"min_area must be >= 1, dilation >= 0 and window >= 1, got min_area={min_area}, "
            f"dilation={dilation}, window={window}"
        )
    finite = np.isfinite(data)
    reasons: dict[int, str] = {}
    blank = _blank_sections(data, finite, blank_fraction, reasons)
    # From here on, non-finite voxels are treated as damage and excluded from statistics.
    clean = np.where(finite, data, np.float32(np.nanmedian(data[finite]) if finite.any() else 0))
    good = np.flatnonzero(~blank)
    outliers = _outlier_sections(clean, good, outlier_threshold, reasons)
    missing = sorted(set(np.flatnonzero(blank).tolist()) | set(outliers))
    partial: dict[int, np.ndarray] = {}
    for z in np.flatnonzero(~finite.all(axis=(1, 2))).tolist():
        if z not in missing:
            partial[z] = ~finite[z]
            reasons[z] = f"{int((~finite[z]).sum())} non-finite pixels"
    if local:
        usable = np.setdiff1d(np.arange(data.shape[0]), missing)
        masks = _local_damage(
            clean, usable, local_threshold, local_grow, min_area, dilation, sigma, window
        )
        for z, mask in masks.items():
            partial[z] = partial.get(z, np.zeros_like(mask)) | mask
            note = f"local damage: {int(mask.sum())} pixels depart from both neighbours"
            reasons[z] = f"{reasons[z]}; {note}" if z in reasons else note
    return DetectionResult(missing=tuple(missing), partial=partial, reasons=reasons)


def _blank_sections(
    data: np.ndarray, finite: np.ndarray, fraction: float, reasons: dict[int, str]
) -> np.ndarray:
    num = data.shape[0]
    sub = data[:, ::2, ::2].reshape(num, -1)
    ok = finite[:, ::2, ::2].reshape(num, -1)
    span = np.zeros(num)
    for z in range(num):
        values = sub[z][ok[z]]
        if values.size:
            low, high = np.percentile(values, [1, 99])
            span[z] = high - low
    finite_share = ok.mean(axis=1)
    typical = np.median(span[finite_share > 0.5]) if (finite_share > 0.5).any() else 0.0
    blank = (finite_share <= 0.5) | (span <= fraction * typical)
    for z in np.flatnonzero(blank).tolist():
        if finite_share[z] <= 0.5:
            reasons[z] = f"blank: {100 * (1 - finite_share[z]):.0f}% of pixels are NaN/inf"
        else:
            share = 100 * span[z] / max(typical, 1e-12)
            reasons[z] = (
                f"blank: intensity span {span[z]:.3g} is {share:.1f}% of the typical {typical:.3g}"
            )
    return blank


def _outlier_sections(
    data: np.ndarray, good: np.ndarray, threshold: float, reasons: dict[int, str]
) -> list[int]:
    """Sections (among ``good``) far from both neighbours, or with an outlying contrast."""
    if good.size < 3:
        return []
    sub = data[good][:, ::2, ::2]
    near_diff = np.abs(np.diff(sub, axis=0)).mean(axis=(1, 2))  # (n - 1,)
    skip_diff = np.abs(sub[2:] - sub[:-2]).mean(axis=(1, 2))  # (n - 2,)
    near = np.minimum(near_diff[:-1], near_diff[1:])
    ratio = near / np.maximum(skip_diff, 1e-12)
    std = sub.reshape(len(good), -1).std(axis=1) + 1e-12
    # Contrast against the median of up to two sections each side (not the section itself).
    contrast = np.empty(len(good))
    for i in range(len(good)):
        others = np.r_[std[max(0, i - 2) : i], std[i + 1 : i + 3]]
        contrast[i] = np.log(std[i] / np.median(others))
    interior = np.ones(len(ratio), bool)
    ratio_z = _robust_z(ratio, interior)
    contrast_z = _robust_z(contrast, np.ones(len(good), bool))
    flagged = []
    for i, z in enumerate(good.tolist()):
        why = []
        if 0 < i < len(good) - 1 and ratio_z[i - 1] > threshold and ratio[i - 1] > 1.0:
            why.append(
                f"far from both neighbours (difference ratio {ratio[i - 1]:.2f}, "
                f"robust z {ratio_z[i - 1]:.1f})"
            )
        if abs(contrast_z[i]) > threshold and abs(contrast[i]) > 0.1:
            why.append(
                f"contrast {np.exp(contrast[i]):.2f}x that of its neighbours "
                f"(robust z {contrast_z[i]:.1f})"
            )
        if why:
            flagged.append(z)
            reasons[z] = "outlier: " + "; ".join(why)
    return flagged


def _local_damage(
    data: np.ndarray,
    usable: np.ndarray,
    threshold: float,
    grow: float,
    min_area: int,
    dilation: int,
    sigma: float,
    window: int,
) -> dict[int, np.ndarray]:
    if usable.size < 3:
        return {}
    sub = data[usable]
    low, high = np.percentile(sub[:, ::4, ::4], [1, 99])
    sub = (sub - low) / max(high - low, 1e-12)
    smooth = (0, sigma, sigma)
    up = ndimage.gaussian_filter(np.abs(sub[1:-1] - sub[:-2]), smooth)
    down = ndimage.gaussian_filter(np.abs(sub[1:-1] - sub[2:]), smooth)
    departure = np.minimum(up, down)  # sections 1 .. n-2 of ``usable``
    num = len(departure)
    structure = ndimage.generate_binary_structure(2, 1)
    masks = {}
    for i in range(num):
        lo, hi = max(0, i - window), min(num, i + window + 1)
        ref = departure[lo:hi]
        med = np.median(ref, axis=0)
        mad = np.median(np.abs(ref - med), axis=0)
        scale = _MAD_TO_SIGMA * (mad + 0.5 * np.median(mad) + 1e-6)
        score = (departure[i] - med) / scale
        seeds = score > threshold
        if not seeds.any():
            continue
        labels, count = ndimage.label(seeds)
        areas = ndimage.sum_labels(seeds, labels, index=np.arange(1, count + 1))
        seeds = np.isin(labels, 1 + np.flatnonzero(areas >= min_area))
        if not seeds.any():
            continue
        region = apply_hysteresis_threshold(score, grow, threshold)
        # Keep only grown components that contain a kept seed.
        grown, _ = ndimage.label(region)
        keep = np.unique(grown[seeds])
        region = np.isin(grown, keep[keep > 0])
        if dilation:
            region = ndimage.binary_dilation(region, structure, iterations=dilation)
        masks[int(usable[i + 1])] = region
    return masks
