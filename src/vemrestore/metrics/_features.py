"""Perceptual measures that run offline: feature-set distances (KID, Fréchet) and MS-SSIM.

The kernel inception distance and the Fréchet distance compare two *sets* of
feature vectors; :func:`feature_kid` feeds them with the encoder descriptors of
the project's own EM segmenter (no photograph-trained network, no download).
MS-SSIM comes from the maintained ``pytorch_msssim`` package. Torch is
imported only inside the functions that need it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import scipy.linalg

from vemrestore.errors import UserInputError
from vemrestore.metrics._image import PLANE_AXIS, as_real_array, check_pair, resolve_data_range
from vemrestore.metrics._segmenter import plane_tiles
from vemrestore.normalize import PercentileNormalization

__all__ = [
    "FeatureExtractor",
    "feature_kid",
    "frechet_distance",
    "kernel_inception_distance",
    "multiscale_ssim",
]

# MS-SSIM (Wang et al. 2003): 5 scales, so 4 halvings; window at most 11 (sigma 1.5).
_MS_SSIM_HALVINGS = 4
_MS_SSIM_MAX_WIN = 11
_MS_SSIM_SIGMA = 1.5
_PLANES_PER_BATCH = 32


class FeatureExtractor(Protocol):
    """Anything with the ``features`` method of the segmenter (see :func:`feature_kid`)."""

    def features(
        self, tiles: np.ndarray, *, normalization: PercentileNormalization
    ) -> np.ndarray: ...


def _feature_sets(features_a: Any, features_b: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both sets as float64 (N, D) arrays of one D, at least 2 finite rows each."""
    sets = []
    for name, value in (("features_a", features_a), ("features_b", features_b)):
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] == 0:
            raise UserInputError(
                f"{name} must be a (N, D) array of feature vectors, got {arr.shape}"
            )
        if arr.shape[0] < 2:
            raise UserInputError(f"{name} has {arr.shape[0]} feature vector(s); need at least 2")
        if not np.isfinite(arr).all():
            raise UserInputError(f"{name} contains NaN or infinite values")
        sets.append(arr)
    if sets[0].shape[1] != sets[1].shape[1]:
        raise UserInputError(
            f"features_a has {sets[0].shape[1]} dimensions but features_b has "
            f"{sets[1].shape[1]} (extract both with the same network)"
        )
    return sets[0], sets[1]


def _cubic_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The matrix k(x_i, y_j) = (x_i . y_j / d + 1)^3."""
    gram = x @ y.T / x.shape[1] + 1.0
    return gram * gram * gram  # twice as fast as ** 3


def _polynomial_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of two equal-sized sets under the cubic kernel."""
    m = len(x)
    k_xx, k_yy, k_xy = _cubic_kernel(x, x), _cubic_kernel(y, y), _cubic_kernel(x, y)
    # Unbiased: drop the k(x_i, x_i) terms from the within-set means.
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2.0 * k_xy.mean())


def kernel_inception_distance(
    features_a: Any,
    features_b: Any,
    *,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> float:
    """Kernel inception distance (KID) between two sets of feature vectors (N, D).

    The unbiased estimate of the squared maximum mean discrepancy (MMD^2)
    under the cubic polynomial kernel ``k(x, y) = (x . y / D + 1) ** 3``,
    averaged over ``num_subsets`` random subsets of ``min(subset_size,
    len(a), len(b))`` rows of each set, drawn without replacement (Binkowski
    et al. 2018, "Demystifying MMD GANs"). Unlike the Fréchet distance it
    assumes no Gaussian shape and is unbiased for small sets.

    Parameters
    ----------
    features_a, features_b : array_like, shape (N, D) and (M, D)
        The two sets, at least 2 finite rows each, extracted by one network.
    num_subsets : int
        Number of random subsets averaged.
    subset_size : int
        Rows per subset (capped by the smaller set).
    seed : int
        Seed of the subset draws: the same seed gives the same value.

    Returns
    -------
    float
        KID, in squared kernel units (no physical unit). Because the estimator
        is unbiased, samples of one distribution give values scattered around
        0, slightly negative as often as slightly positive. When both sets
        have the same length and ``subset_size`` is at least that, every
        subset is the whole of both sets and one evaluation is done.

    Raises
    ------
    UserInputError
        Inputs are not 2D, differ in D, have fewer than 2 rows or non-finite
        values; ``num_subsets`` < 1 or ``subset_size`` < 2.
    """
    a, b = _feature_sets(features_a, features_b)
    if num_subsets < 1 or subset_size < 2:
        raise UserInputError(
            f"KID needs num_subsets >= 1 and subset_size >= 2, got {num_subsets} and {subset_size}"
        )
    m = min(subset_size, len(a), len(b))
    if m == len(a) == len(b):  # every subset would be the whole of both sets
        return _polynomial_mmd2(a, b)
    rng = np.random.default_rng(seed)
    values = [
        _polynomial_mmd2(
            a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        )
        for _ in range(num_subsets)
    ]
    return float(np.mean(values))


def frechet_distance(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between Gaussians fitted to two sets of feature vectors (N, D).

    ``|mu_a - mu_b|^2 + tr(C_a + C_b - 2 (C_a C_b)^(1/2))``, the formula of
    the Fréchet inception distance (Heusel et al. 2017) on any features. The
    matrix square root (``scipy.linalg.sqrtm``) is taken in its real part;
    round-off can make the result slightly negative, which is clamped to 0.
    Biased for small sets (prefer :func:`kernel_inception_distance` then).

    Raises
    ------
    UserInputError
        As :func:`kernel_inception_distance`.
    """
    a, b = _feature_sets(features_a, features_b)
    cov_a = np.atleast_2d(np.cov(a, rowvar=False))
    cov_b = np.atleast_2d(np.cov(b, rowvar=False))
    cross = np.real(scipy.linalg.sqrtm(cov_a @ cov_b))
    mean_term = float(np.sum((a.mean(axis=0) - b.mean(axis=0)) ** 2))
    return max(0.0, mean_term + float(np.trace(cov_a + cov_b - 2.0 * cross)))


def _pooled_features(
    volume: np.ndarray,
    orientations: Sequence[str],
    *,
    extractor: FeatureExtractor,
    normalization: PercentileNormalization,
    tile: int,
    max_tiles: int,
) -> np.ndarray:
    """Features of the tiles of every requested orientation of ``volume``, stacked."""
    tiles = [
        plane_tiles(volume, orientation=o, tile=tile, max_tiles=max_tiles) for o in orientations
    ]
    return extractor.features(np.concatenate(tiles), normalization=normalization)


def feature_kid(
    restored: Any,
    reference: Any,
    *,
    segmenter: FeatureExtractor,
    normalization: PercentileNormalization,
    orientations: Sequence[str] = ("xz", "yz"),
    reference_orientations: Sequence[str] | None = None,
    tile: int = 64,
    max_tiles: int = 512,
) -> float:
    """KID between EM-feature sets of tiles of a restored volume and of a reference.

    Each (Z, Y, X) volume is cut into ``tile`` x ``tile`` tiles of its planes
    (:func:`~vemrestore.metrics._segmenter.plane_tiles`, at most ``max_tiles``
    per orientation); ``segmenter.features`` describes each tile (for the
    learned segmenter: mean and standard deviation of each encoder bottleneck
    channel); the restored tiles of all ``orientations`` are pooled, so are the
    reference tiles of ``reference_orientations``, and
    :func:`kernel_inception_distance` compares the two pools (seed 0).

    The value's scale is that of the features: compare KIDs computed with
    the same segmenter weights only.

    With a ground truth, compare like with like (the default: cross-section
    planes XZ and YZ of both). Without one, pass the input volume as
    ``reference`` and ``reference_orientations=("xy",)``: the restored
    volume's cross-sections are scored against the in-section planes of the
    acquisition, which an isotropic restoration should resemble. Both
    volumes then need the same (isotropic) voxel size.

    Parameters
    ----------
    restored, reference : array_like, shape (Z, Y, X)
        Volumes; their planes must hold at least one tile.
    segmenter : FeatureExtractor
        Usually ``load_segmenter()`` (the learned one; the classical one has
        no features).
    normalization : PercentileNormalization
        Intensity scaling applied to both volumes' tiles, usually the
        reference's (``PercentileNormalization.from_data(reference)``), so a
        changed intensity scale counts as a difference.
    orientations : sequence of {"xy", "xz", "yz"}
        Planes of ``restored`` to tile.
    reference_orientations : sequence of {"xy", "xz", "yz"}, optional
        Planes of ``reference`` to tile (default: ``orientations``).
    tile, max_tiles : int
        Tile side and the most tiles per orientation and volume.

    Returns
    -------
    float
        KID; near 0 (either sign) when the tiles look alike, larger when not.

    Raises
    ------
    UserInputError
        A volume is not 3D, an orientation list is empty or names an unknown
        orientation, planes are smaller than a tile, or the segmenter gives
        no features.
    """
    ref_orientations = orientations if reference_orientations is None else reference_orientations
    if len(orientations) == 0 or len(ref_orientations) == 0:
        raise UserInputError("feature_kid needs at least one orientation for each volume")
    pools = [
        _pooled_features(
            as_real_array(volume, name=name, ndims=(3,)),
            chosen,
            extractor=segmenter,
            normalization=normalization,
            tile=tile,
            max_tiles=max_tiles,
        )
        for name, volume, chosen in (
            ("restored", restored, orientations),
            ("reference", reference, ref_orientations),
        )
    ]
    return kernel_inception_distance(pools[0], pools[1])


def _ms_ssim_window(shape: tuple[int, ...], orientation: str) -> int:
    """The largest odd window (3..11) that lets the planes of ``shape`` survive 4 halvings."""
    side = min(shape)
    # pytorch_msssim requires side > (win - 1) * 2**4.
    win = min(_MS_SSIM_MAX_WIN, (side - 1) // 2**_MS_SSIM_HALVINGS + 1)
    win -= 1 - win % 2  # round down to odd
    if win < 3:
        smallest = 2 * 2**_MS_SSIM_HALVINGS + 1
        raise UserInputError(
            f"MS-SSIM needs {orientation.upper()} planes of at least {smallest} pixels on "
            f"their smaller side (5 scales, window 3), got planes of shape {shape}"
        )
    return win


def multiscale_ssim(
    image: Any, reference: Any, *, data_range: float, orientation: str = "xy"
) -> float:
    """Multi-scale SSIM (Wang et al. 2003) of an image or volume against a reference.

    Computed by ``pytorch_msssim.ms_ssim`` (5 scales, its standard weights,
    Gaussian window of sigma 1.5) on each 2D plane, in float32, and averaged
    over the planes. The window is 11 pixels wide when the planes' smaller
    side exceeds 160 pixels, otherwise the widest odd window (down to 3, a
    truncated Gaussian) that the 4 halvings leave room for; scores of planes
    of different sizes may therefore use different windows.

    Parameters
    ----------
    image, reference : array_like, shape (Y, X) or (Z, Y, X)
        Same shape; a 2D image is one plane.
    data_range : float
        Span of possible intensities (e.g. 255 for 8-bit data).
    orientation : {"xy", "xz", "yz"}
        Planes of a volume to score (ignored for a 2D image).

    Returns
    -------
    float
        Mean MS-SSIM over the planes; 1 for identical inputs.

    Raises
    ------
    UserInputError
        Shapes differ, inputs are not 2D/3D, ``data_range`` is not > 0,
        ``orientation`` is unknown, or planes are under 33 pixels on a side.
    """
    ref, img = check_pair(reference, image, names=("reference", "image"))
    span = resolve_data_range(ref, img, data_range)
    if orientation not in PLANE_AXIS:
        raise UserInputError(f"orientation must be xy, xz or yz, got {orientation!r}")
    if ref.ndim == 2:
        ref, img = ref[None], img[None]
    else:
        ref, img = (np.moveaxis(v, PLANE_AXIS[orientation], 0) for v in (ref, img))
    win = _ms_ssim_window(ref.shape[1:], orientation)

    import torch
    from pytorch_msssim import ms_ssim

    scores = []
    for start in range(0, len(ref), _PLANES_PER_BATCH):
        batch = slice(start, start + _PLANES_PER_BATCH)
        x = torch.from_numpy(np.ascontiguousarray(img[batch, None], dtype=np.float32))
        y = torch.from_numpy(np.ascontiguousarray(ref[batch, None], dtype=np.float32))
        with torch.no_grad():
            per_plane = ms_ssim(
                x, y, data_range=span, size_average=False, win_size=win, win_sigma=_MS_SSIM_SIGMA
            )
        scores.append(per_plane.double().numpy())
    return float(np.concatenate(scores).mean())
