"""Feature-set distances (KID, Fréchet), EM-feature KID of volumes, and MS-SSIM."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from vemrestore.errors import UserInputError
from vemrestore.metrics import (
    feature_kid,
    frechet_distance,
    kernel_inception_distance,
    multiscale_ssim,
)
from vemrestore.normalize import PercentileNormalization

# Fewer, smaller subsets than the defaults keep the unit tests fast.
_FAST = {"num_subsets": 20, "subset_size": 200}


def _gaussian_sets(n: int = 400, dims: int = 8) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, dims)), rng.normal(size=(n, dims))


class _TileStats:
    """A stand-in for the learned segmenter: mean, spread and gradient energy per tile."""

    def features(self, tiles: np.ndarray, *, normalization: PercentileNormalization) -> np.ndarray:
        x = normalization.apply(np.asarray(tiles, dtype=np.float64))
        rows, cols = np.diff(x, axis=1), np.diff(x, axis=2)
        return np.stack(
            [
                x.mean(axis=(1, 2)),
                x.std(axis=(1, 2)),
                10 * (rows**2).mean(axis=(1, 2)),
                10 * (cols**2).mean(axis=(1, 2)),
            ],
            axis=1,
        )


def _texture(seed: int, shape: tuple[int, int, int] = (48, 48, 48), sigma=1.5) -> np.ndarray:
    """Smoothed noise, 0..255-ish: a stationary 'EM-like' texture."""
    noise = np.random.default_rng(seed).normal(size=shape)
    smooth = ndi.gaussian_filter(noise, sigma)
    return (128 + 40 * smooth / smooth.std()).astype(np.float32)


def test_kid_is_near_zero_for_one_distribution_and_large_for_another():
    a, b = _gaussian_sets()
    same = kernel_inception_distance(a, b, **_FAST)
    shifted = kernel_inception_distance(a, b + 0.5, **_FAST)
    scaled = kernel_inception_distance(a, 2 * b, **_FAST)
    assert shifted > 0.3 and scaled > 0.3, (shifted, scaled)
    assert abs(same) < 0.02 * min(shifted, scaled), (same, shifted, scaled)


def test_kid_is_symmetric_and_reproducible():
    a, b = _gaussian_sets()
    # Whole sets of one size: no sampling, symmetric up to round-off.
    whole = {"subset_size": 1000}
    assert kernel_inception_distance(a, b + 0.3, **whole) == pytest.approx(
        kernel_inception_distance(b + 0.3, a, **whole), rel=1e-12
    )
    c = b[:300] + 0.3
    # Subsets: the swap changes which draws go to which set; equal within sampling noise.
    forward = kernel_inception_distance(a, c, **_FAST)
    backward = kernel_inception_distance(c, a, **_FAST)
    assert forward == pytest.approx(backward, rel=0.1)
    assert kernel_inception_distance(a, c, **_FAST, seed=3) == kernel_inception_distance(
        a, c, **_FAST, seed=3
    )
    assert kernel_inception_distance(a, c, **_FAST, seed=4) != forward


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros(5), np.zeros((5, 1)), r"features_a must be a \(N, D\)"),
        (np.zeros((5, 3)), np.zeros((5, 4)), "3 dimensions but features_b has 4"),
        (np.zeros((5, 3)), np.zeros((1, 3)), "features_b has 1 feature vector"),
        (np.full((5, 3), np.nan), np.zeros((5, 3)), "features_a contains NaN"),
    ],
)
def test_feature_distances_reject_bad_sets(a, b, match):
    with pytest.raises(UserInputError, match=match):
        kernel_inception_distance(a, b)
    with pytest.raises(UserInputError, match=match):
        frechet_distance(a, b)


def test_frechet_distance_is_zero_for_identical_sets_and_the_squared_mean_shift():
    a, b = _gaussian_sets()
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    # Same covariance, mean moved by 0.5 in 8 dimensions: |shift|^2 = 2.
    assert frechet_distance(a, a + 0.5) == pytest.approx(2.0, rel=1e-6)
    near, far = frechet_distance(a, b + 0.5), frechet_distance(a, b + 1.0)
    assert frechet_distance(a, b) < near < far


def test_feature_kid_separates_a_different_texture_and_a_changed_scale():
    reference = _texture(0)
    norm = PercentileNormalization.from_data(reference)

    def kid(volume, **kwargs):
        return feature_kid(
            volume, reference, segmenter=_TileStats(), normalization=norm, tile=16, **kwargs
        )

    same = kid(_texture(1))
    coarser = kid(_texture(1, sigma=3.0))
    brighter = kid(_texture(1) * 1.3)
    assert coarser > 20 * abs(same) and brighter > 20 * abs(same), (same, coarser, brighter)
    assert kid(_texture(1), orientations=("xy",)) != same  # orientations are honoured


def test_feature_kid_is_the_kid_of_the_pooled_tile_features():
    from vemrestore.metrics._segmenter import plane_tiles

    reference, restored = _texture(0), _texture(1, sigma=2.0)
    norm = PercentileNormalization.from_data(reference)
    pooled = [
        _TileStats().features(
            np.concatenate(
                [plane_tiles(v, orientation=o, tile=16, max_tiles=128) for o in orientations]
            ),
            normalization=norm,
        )
        for v, orientations in ((restored, ("xz", "yz")), (reference, ("xy",)))
    ]
    kid = feature_kid(
        restored,
        reference,
        segmenter=_TileStats(),
        normalization=norm,
        reference_orientations=("xy",),
        tile=16,
        max_tiles=128,
    )
    assert kid == kernel_inception_distance(*pooled)


def test_feature_kid_against_own_planes_finds_anisotropy():
    # No reference: cross-sections of a volume smeared along z do not look like its XY planes.
    isotropic = _texture(0)
    smeared = ndi.gaussian_filter1d(isotropic, 3.0, axis=0)

    def self_kid(volume):
        return feature_kid(
            volume,
            volume,
            segmenter=_TileStats(),
            normalization=PercentileNormalization.from_data(volume),
            reference_orientations=("xy",),
            tile=16,
            max_tiles=128,
        )

    assert self_kid(smeared) > 20 * abs(self_kid(isotropic))


def test_feature_kid_rejects_bad_volumes_and_orientations():
    volume = _texture(0, shape=(8, 32, 32))
    norm = PercentileNormalization.from_data(volume)
    common = {"segmenter": _TileStats(), "normalization": norm, "tile": 8}
    with pytest.raises(UserInputError, match="restored has shape"):
        feature_kid(volume[0], volume, **common)
    with pytest.raises(UserInputError, match="at least one orientation"):
        feature_kid(volume, volume, orientations=(), **common)
    with pytest.raises(UserInputError, match="orientation must be"):
        feature_kid(volume, volume, orientations=("zz",), **common)
    with pytest.raises(UserInputError, match="smaller than one 16x16 tile"):
        feature_kid(volume, volume, **{**common, "tile": 16})


def test_feature_kid_needs_a_segmenter_with_features():
    from vemrestore.metrics._segmenter import load_segmenter

    volume = _texture(0, shape=(16, 32, 32))
    with pytest.raises(UserInputError, match="learned segmenter"):
        feature_kid(
            volume,
            volume,
            segmenter=load_segmenter("classical"),
            normalization=PercentileNormalization.from_data(volume),
            tile=16,
        )


def test_multiscale_ssim_is_one_for_identical_and_falls_with_noise_and_blur():
    image = _texture(0, shape=(4, 64, 64))
    rng = np.random.default_rng(1)
    assert multiscale_ssim(image, image, data_range=255) == pytest.approx(1.0, abs=1e-5)
    light = multiscale_ssim(image + rng.normal(0, 5, image.shape), image, data_range=255)
    heavy = multiscale_ssim(image + rng.normal(0, 30, image.shape), image, data_range=255)
    blurred = multiscale_ssim(ndi.gaussian_filter(image, (0, 2, 2)), image, data_range=255)
    assert 1.0 > light > heavy, (light, heavy)
    assert blurred < 0.95, blurred


def test_multiscale_ssim_scores_the_requested_planes():
    import torch
    from pytorch_msssim import ms_ssim

    reference = _texture(0, shape=(36, 3, 40))
    test = reference + np.random.default_rng(1).normal(0, 20, reference.shape)
    xz = multiscale_ssim(test, reference, data_range=255, orientation="xz")
    planes = [multiscale_ssim(test[:, y], reference[:, y], data_range=255) for y in range(3)]
    assert xz == pytest.approx(np.mean(planes), rel=1e-5)
    swapped = (v.swapaxes(1, 2) for v in (test, reference))
    assert multiscale_ssim(*swapped, data_range=255, orientation="yz") == pytest.approx(xz)
    # Planes above 160 pixels use the package's default window (11).
    big_ref, big_test = (v[:, 0].repeat(5, 0).repeat(5, 1) for v in (reference, test))
    expected = ms_ssim(
        *(torch.from_numpy(v[None, None].astype(np.float32)) for v in (big_test, big_ref)),
        data_range=255,
    )
    assert multiscale_ssim(big_test, big_ref, data_range=255) == pytest.approx(float(expected))


def test_multiscale_ssim_rejects_planes_too_small_for_five_scales():
    volume = _texture(0, shape=(32, 40, 40))
    assert 0 < multiscale_ssim(volume + 1, volume, data_range=255, orientation="xy") < 1
    with pytest.raises(UserInputError, match="XZ planes of at least 33 pixels"):
        multiscale_ssim(volume, volume, data_range=255, orientation="xz")
    with pytest.raises(UserInputError, match="data_range"):
        multiscale_ssim(volume, volume, data_range=0)
    with pytest.raises(UserInputError, match="orientation"):
        multiscale_ssim(volume, volume, data_range=255, orientation="zx")


@pytest.mark.realdata
@pytest.mark.slow
def test_learned_features_tell_em_from_noise_and_blur(real_path, segmenter, one_torch_thread):
    """Two halves of one FIB-SEM cube are near in feature space; noise and blur are far."""
    import tifffile

    volume = tifffile.imread(real_path("medulla_sample2")).astype(np.float32)
    first, second = volume[:125], volume[125:]
    noise = np.random.default_rng(0).normal(second.mean(), second.std(), second.shape)
    blurred = ndi.gaussian_filter(second, 3.0)
    norm = PercentileNormalization.from_data(first)

    def kid(candidate):
        return feature_kid(
            candidate, first, segmenter=segmenter, normalization=norm, orientations=("xy",)
        )

    halves, to_noise, to_blur = kid(second), kid(noise.astype(np.float32)), kid(blurred)
    print(f"KID halves {halves:.4g}, to noise {to_noise:.4g}, to blur {to_blur:.4g}")
    # Measured with the shipped weights (3000 steps): halves 0.0030, noise 0.027, blur 0.011.
    assert to_noise > 5 * abs(halves), (halves, to_noise)
    assert to_blur > 2 * abs(halves), (halves, to_blur)
