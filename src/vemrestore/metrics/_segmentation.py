"""Segmentation scores (VI, adapted Rand error, boundary F1) and classical segmenters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage import metrics as sk_metrics
from skimage.segmentation import relabel_sequential, watershed

from vemrestore.errors import UserInputError
from vemrestore.metrics._image import as_real_array, check_pair

__all__ = [
    "adapted_rand_error",
    "boundary_f1",
    "seeded_watershed",
    "threshold_segmentation",
    "variation_of_information",
]


def _label_pair(labels: Any, reference: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both inputs as integer NumPy arrays of one shape."""
    seg, ref = check_pair(labels, reference, names=("labels", "reference"), ndims=(1, 2, 3))
    for name, arr in (("labels", seg), ("reference", ref)):
        if not np.issubdtype(arr.dtype, np.integer):
            raise UserInputError(
                f"{name} has dtype {arr.dtype}; expected integer label ids "
                "(segment the image first, e.g. with threshold_segmentation)"
            )
    return seg, ref


def variation_of_information(
    labels: Any, reference: Any, *, ignore_labels: Sequence[int] = ()
) -> dict[str, float]:
    """Variation of information (VI) of a segmentation against a reference, in bits.

    :func:`skimage.metrics.variation_of_information` with the reference as
    ``image0`` returns ``[H(labels | reference), H(reference | labels)]``: the
    split (over-segmentation) term, which grows when a reference segment is
    cut, and the merge (under-segmentation) term, which grows when reference
    segments are fused. Both are 0 for identical segmentations, whatever the ids.

    Parameters
    ----------
    labels, reference : array_like of int, one shape
        Segmentation to score and ground-truth segmentation.
    ignore_labels : sequence of int, optional
        Reference labels left out of the score, e.g. ``(0,)``; none by default.

    Returns
    -------
    dict of str to float
        ``seg_vi_split``, ``seg_vi_merge`` and their sum ``seg_vi``.

    Raises
    ------
    UserInputError
        Shapes differ or an input is not integer labels.

    Examples
    --------
    >>> ref = np.repeat([1, 2], 4).reshape(1, 8)
    >>> variation_of_information(np.ones_like(ref), ref)
    {'seg_vi_split': 0.0, 'seg_vi_merge': 1.0, 'seg_vi': 1.0}
    """
    seg, ref = _label_pair(labels, reference)
    split, merge = sk_metrics.variation_of_information(ref, seg, ignore_labels=ignore_labels)
    split, merge = float(abs(split)), float(abs(merge))  # abs: skimage can return -0.0
    return {"seg_vi_split": split, "seg_vi_merge": merge, "seg_vi": split + merge}


def adapted_rand_error(
    labels: Any, reference: Any, *, ignore_labels: Sequence[int] = ()
) -> dict[str, float]:
    """Adapted Rand error (1 - Rand F-score) of a segmentation against a reference.

    Uses :func:`skimage.metrics.adapted_rand_error` (SNEMI3D definition).
    Parameters and errors as in ``variation_of_information`` (no reference
    label is ignored by default, unlike scikit-image's ``(0,)``).

    Returns
    -------
    dict of str to float
        ``seg_arand``: 0 for identical segmentations, up to 1.

    Examples
    --------
    >>> ref = np.repeat([1, 2], 4).reshape(1, 8)
    >>> adapted_rand_error(3 - ref, ref)
    {'seg_arand': 0.0}
    """
    seg, ref = _label_pair(labels, reference)
    error, _, _ = sk_metrics.adapted_rand_error(ref, seg, ignore_labels=ignore_labels)
    return {"seg_arand": float(error)}


def boundary_f1(boundaries: Any, reference: Any, *, tolerance: float = 2) -> float:
    """F1 score of a binary boundary (membrane) map against a reference map.

    In each 2D plane (``volume[z]``), precision is the fraction of boundary
    pixels within ``tolerance`` pixels (Euclidean) of a reference boundary
    pixel, recall the fraction of reference boundary pixels within
    ``tolerance`` of a boundary pixel, and F1 their harmonic mean. A plane
    where both maps are empty scores 1; where only one is, 0. The result is
    the mean over planes.

    Parameters
    ----------
    boundaries, reference : array_like of bool, one shape (Z, Y, X) or (Y, X)
        Boundary map to score and ground truth; nonzero marks boundary pixels.
    tolerance : float, optional
        Largest distance in pixels at which a boundary pixel still matches.

    Returns
    -------
    float
        Mean per-plane F1, 1.0 for identical maps.

    Raises
    ------
    UserInputError
        Shapes differ, inputs are not 2D/3D, or ``tolerance`` is negative.

    Examples
    --------
    >>> ref = np.zeros((8, 8), dtype=bool)
    >>> ref[:, 3] = True
    >>> boundary_f1(np.roll(ref, 1, axis=1), ref, tolerance=1)
    1.0
    """
    pred, ref = (np.asarray(a) != 0 for a in (boundaries, reference))
    check_pair(pred.view(np.uint8), ref.view(np.uint8), names=("boundaries", "reference"))
    if not tolerance >= 0:
        raise UserInputError(f"tolerance must be >= 0 pixels, got {tolerance!r}")
    if pred.ndim == 2:
        pred, ref = pred[None], ref[None]
    scores = [_plane_f1(p, r, float(tolerance)) for p, r in zip(pred, ref, strict=True)]
    return float(np.mean(scores))


def _plane_f1(pred: np.ndarray, ref: np.ndarray, tolerance: float) -> float:
    n_pred, n_ref = int(pred.sum()), int(ref.sum())
    if n_pred == 0 or n_ref == 0:
        return 1.0 if n_pred == n_ref else 0.0
    precision = np.count_nonzero(ndi.distance_transform_edt(~ref)[pred] <= tolerance) / n_pred
    recall = np.count_nonzero(ndi.distance_transform_edt(~pred)[ref] <= tolerance) / n_ref
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def seeded_watershed(
    boundary_map: Any, *, threshold: float, min_distance: int = 3, compactness: float = 0.0
) -> np.ndarray:
    """Segment a boundary (membrane) map by seeded watershed.

    Seeds are the local maxima (largest within ``min_distance`` voxels) of
    the Euclidean distance transform of the non-boundary region
    ``boundary_map < threshold``; maxima about ``min_distance`` or less
    apart, such as those on a plateau, form one seed.
    :func:`skimage.segmentation.watershed` then floods the boundary map from
    the seeds, so every voxel, boundary voxels included, gets a label.

    Parameters
    ----------
    boundary_map : array_like, shape (Z, Y, X) or (Y, X)
        High values on boundaries (e.g. a membrane probability map).
    threshold : float
        Voxels below it are cell interior.
    min_distance : int, optional
        Least distance in voxels between two seeds.
    compactness : float, optional
        Passed to the watershed; 0 is the classical watershed.

    Returns
    -------
    numpy.ndarray of int32
        Labels 1..n, same shape; all 0 if no voxel is below ``threshold``.

    Raises
    ------
    UserInputError
        The map is not a 2D/3D real array or ``min_distance`` is below 1.

    Examples
    --------
    >>> bmap = np.zeros((9, 9), dtype=np.float32)
    >>> bmap[:, 4] = 1.0
    >>> np.unique(seeded_watershed(bmap, threshold=0.5, min_distance=2)).tolist()
    [1, 2]
    """
    bmap = as_real_array(boundary_map, name="boundary_map", ndims=(2, 3))
    if int(min_distance) < 1:
        raise UserInputError(f"min_distance must be >= 1 voxel, got {min_distance!r}")
    interior = bmap < threshold
    if not interior.any():
        return np.zeros(bmap.shape, dtype=np.int32)
    distance = ndi.distance_transform_edt(interior)
    peaks = interior & (distance == ndi.maximum_filter(distance, size=2 * int(min_distance) + 1))
    # peaks closer than about min_distance (plateaus included) share one seed label
    full = np.ones((3,) * bmap.ndim, dtype=bool)
    grown = ndi.binary_dilation(peaks, full, iterations=max(1, int(min_distance) // 2))
    markers = ndi.label(grown & interior, structure=full)[0] * peaks
    labels = watershed(bmap, markers, compactness=compactness)
    return relabel_sequential(labels.astype(np.int32))[0]


def threshold_segmentation(image: Any, *, threshold: float, below: bool = True) -> np.ndarray:
    """Connected components of the region on one side of a threshold.

    The one-threshold classical fallback to :func:`seeded_watershed`.

    Parameters
    ----------
    image : array_like, shape (Z, Y, X) or (Y, X)
        Intensities or a boundary map.
    threshold : float
        Intensity cut.
    below : bool, optional
        Segment ``image < threshold`` (default, for bright membranes) or ``>``.

    Returns
    -------
    numpy.ndarray of int32
        Face-connected components labelled 1..n; 0 elsewhere.

    Examples
    --------
    >>> threshold_segmentation(np.array([[0, 1, 0, 0]]), threshold=0.5).tolist()
    [[1, 0, 2, 2]]
    """
    arr = as_real_array(image, name="image", ndims=(2, 3))
    region = arr < threshold if below else arr > threshold
    labels, _ = ndi.label(region)
    return labels.astype(np.int32)
