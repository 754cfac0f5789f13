"""Fourier ring correlation, single-image FRC and resolution read-out."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from scipy import ndimage as ndi

from vemrestore.errors import UserInputError
from vemrestore.metrics import (
    FRCCurve,
    fourier_ring_correlation,
    frc_resolution,
    plane_frc_resolution,
    single_image_frc,
)


def _smooth_image(shape, sigma=2.0, seed=0) -> np.ndarray:
    field = ndi.gaussian_filter(np.random.default_rng(seed).normal(size=shape), sigma)
    return (field / field.std()).astype(np.float32)


def test_frc_of_an_image_with_itself_is_one_everywhere():
    image = _smooth_image((48, 64))
    curve = fourier_ring_correlation(image, image)
    assert curve.frequencies[0] == 0 and curve.frequencies[-1] == pytest.approx(0.5)
    assert len(curve.frequencies) == 48 // 2 + 1
    np.testing.assert_allclose(curve.correlation, 1.0, atol=1e-5)
    assert np.all(curve.num_samples[1:] > 0)


def test_frc_of_independent_noise_is_near_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 128, 128))
    curve = fourier_ring_correlation(a, b)
    corr = curve.correlation[2:]
    assert abs(corr.mean()) < 0.03
    # each ring's correlation of pure noise has standard deviation about 1/sqrt(samples)
    assert np.all(np.abs(corr) < 5 / np.sqrt(curve.num_samples[2:]))


def test_frc_resolution_finds_where_signal_meets_noise():
    rng = np.random.default_rng(1)
    signal = _smooth_image((128, 128), sigma=3.0)
    low, high = (
        fourier_ring_correlation(
            signal + s * rng.normal(size=signal.shape), signal + s * rng.normal(size=signal.shape)
        )
        for s in (0.05, 0.5)
    )
    fine = frc_resolution(low, pixel_size_nm=5.0)
    coarse = frc_resolution(high, pixel_size_nm=5.0)
    assert fine.crossed and coarse.crossed
    assert 10.0 < fine.resolution_nm < coarse.resolution_nm


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros((32, 32)), np.zeros((32, 31)), r"\(32, 32\).*\(32, 31\)"),
        (np.ones((32, 32)), np.ones((32, 32)), "constant"),
        (np.ones((8, 8)), np.ones((8, 8)), "at least 16"),
        (np.ones((4, 32, 32)), np.ones((4, 32, 32)), "2D"),
    ],
)
def test_fourier_ring_correlation_rejects_bad_images(a, b, match):
    with pytest.raises(UserInputError, match=match):
        fourier_ring_correlation(a, b)


@pytest.mark.parametrize("num_bins", [0, 17, 2.5])
def test_fourier_ring_correlation_rejects_bad_num_bins(num_bins):
    image = _smooth_image((32, 32))
    with pytest.raises(UserInputError, match="num_bins"):
        fourier_ring_correlation(image, image, num_bins=num_bins)


def test_single_image_frc_of_a_noise_free_image_stays_high():
    # Needs the half-pixel offset of the diagonal sub-images removed: without it the
    # correlation at 0.1 cycles/pixel would be about J0(2*pi*sqrt(2)*0.1) = 0.81.
    curve = single_image_frc(_smooth_image((128, 128), sigma=2.0))
    assert curve.frequencies[-1] == pytest.approx(0.25)
    low = curve.frequencies <= 0.1
    assert np.all(curve.correlation[low] > 0.95)


def test_single_image_frc_of_white_noise_is_near_zero():
    curve = single_image_frc(np.random.default_rng(2).normal(size=(128, 96)))
    assert len(curve.frequencies) == 96 // 4 + 1
    assert abs(curve.correlation[2:].mean()) < 0.05
    assert np.all(np.abs(curve.correlation[2:]) < 5 / np.sqrt(curve.num_samples[2:]))


def test_single_image_frc_gets_coarser_with_more_noise():
    rng = np.random.default_rng(3)
    signal = _smooth_image((128, 128), sigma=1.5)
    results = [
        frc_resolution(
            single_image_frc(signal + s * rng.normal(size=signal.shape)), pixel_size_nm=10.0
        )
        for s in (1.0, 2.0, 4.0)
    ]
    assert all(r.crossed for r in results)
    assert results[0].resolution_nm < results[1].resolution_nm < results[2].resolution_nm


def test_frc_resolution_interpolates_linearly():
    f = np.linspace(0, 0.5, 11)
    curve = FRCCurve(f, 1 - 4 * f, np.ones(11, dtype=np.int64))
    result = frc_resolution(curve, pixel_size_nm=10.0, threshold=0.2)
    assert result.crossed
    assert result.resolution_nm == pytest.approx(10.0 / 0.2)  # 1 - 4 f = 0.2 at f = 0.2
    assert result.curve is curve


def test_frc_resolution_ignores_a_dip_in_the_lowest_rings():
    f = np.linspace(0, 0.5, 21)
    corr = np.where(f < 0.3, 0.9, 0.0)
    corr[1] = -0.5  # DC/window artefact
    result = frc_resolution(FRCCurve(f, corr, np.ones(21, dtype=np.int64)), pixel_size_nm=1.0)
    assert 0.3 < 1 / result.resolution_nm < 0.325  # the 3-ring average widens the step


def test_frc_resolution_without_crossing_reports_the_curve_limit():
    f = np.linspace(0, 0.25, 9)
    curve = FRCCurve(f, np.ones(9), np.ones(9, dtype=np.int64))
    result = frc_resolution(curve, pixel_size_nm=10.0)
    assert not result.crossed
    assert result.resolution_nm == pytest.approx(40.0)  # 4 pixels: limit of a single-image curve


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"pixel_size_nm": 0.0}, "pixel_size_nm"),
        ({"pixel_size_nm": 10.0, "threshold": 1.5}, "threshold"),
    ],
)
def test_frc_resolution_rejects_bad_options(options, match):
    f = np.linspace(0, 0.5, 9)
    with pytest.raises(UserInputError, match=match):
        frc_resolution(FRCCurve(f, 1 - f, np.ones(9, dtype=np.int64)), **options)


def test_plane_frc_resolution_needs_square_pixels():
    volume = np.random.default_rng(4).normal(size=(32, 32, 32)).astype(np.float32)
    with pytest.raises(UserInputError, match="isotropic"):
        plane_frc_resolution(volume, orientation="xz", voxel_size=(50.0, 5.0, 5.0))
    with pytest.raises(UserInputError, match="orientation"):
        plane_frc_resolution(volume, orientation="zx", voxel_size=(5.0, 5.0, 5.0))
    # XY planes of the same volume have square 5 nm pixels
    result = plane_frc_resolution(volume, orientation="xy", voxel_size=(50.0, 5.0, 5.0))
    assert result.crossed


def test_plane_frc_resolution_averages_planes_and_follows_the_noise():
    rng = np.random.default_rng(5)
    signal = ndi.gaussian_filter(rng.normal(size=(40, 64, 64)), 1.5).astype(np.float32)
    signal /= signal.std()
    noisy, clean = (signal + s * rng.normal(size=signal.shape).astype(np.float32) for s in (1, 0.1))
    worse = plane_frc_resolution(noisy, orientation="yz", voxel_size=(8, 8, 8), max_planes=4)
    better = plane_frc_resolution(clean, orientation="yz", voxel_size=(8, 8, 8), max_planes=4)
    assert worse.resolution_nm > better.resolution_nm
    # 4 planes pooled: 4x the samples of one plane's curve
    one = single_image_frc(noisy[:, :, 8])
    np.testing.assert_array_equal(worse.curve.num_samples, 4 * one.num_samples)


def test_plane_frc_resolution_reads_only_the_chosen_planes_of_a_dask_array():
    da = pytest.importorskip("dask.array")
    volume = np.random.default_rng(6).normal(size=(32, 48, 40)).astype(np.float32)
    lazy = da.from_array(volume, chunks=(8, 16, 16))
    expected = plane_frc_resolution(volume, orientation="xz", voxel_size=(4, 4, 4), max_planes=3)
    result = plane_frc_resolution(lazy, orientation="xz", voxel_size=(4, 4, 4), max_planes=3)
    assert result.resolution_nm == expected.resolution_nm


def test_plane_frc_resolution_rejects_a_constant_plane():
    volume = np.random.default_rng(7).normal(size=(32, 32, 32)).astype(np.float32)
    volume[16] = 0.0
    with pytest.raises(UserInputError, match="xy plane 16"):
        plane_frc_resolution(volume, orientation="xy", voxel_size=(5, 5, 5))


@pytest.mark.realdata
def test_single_image_frc_of_real_em_gets_coarser_with_blur(real_path):
    """Blurred copies of a real slice, each recorded with fresh detector noise.

    This is the acquisition model: the probe blurs the object, then the detector adds
    noise independent from pixel to pixel. Blurring a stored image without adding noise
    cannot be ranked by any FRC (a linear filter scales signal and noise alike in each
    ring; the blurred noise then correlates between the sub-images), see
    ``single_image_frc``'s Notes.
    """
    import tifffile

    volume = tifffile.imread(real_path("medulla_sample2"))
    image = volume[volume.shape[0] // 2].astype(np.float32)
    rng = np.random.default_rng(0)
    results = []
    for sigma in (0, 1, 2, 3):
        blurred = ndi.gaussian_filter(image, sigma) if sigma else image
        recorded = blurred + rng.normal(0, 10, image.shape).astype(np.float32)
        results.append(frc_resolution(single_image_frc(recorded), pixel_size_nm=10.0))
    resolutions = [r.resolution_nm for r in results]
    assert all(r.crossed for r in results), resolutions
    assert all(a < b for a, b in pairwise(resolutions)), resolutions


def test_sector_frc_isolates_the_axial_direction():
    # Blurring only along rows (z) removes row-direction detail: the FRC against
    # the sharp image, restricted to frequencies near the row axis, falls sooner
    # than the full-ring FRC, which the intact column direction keeps high.
    from scipy.ndimage import gaussian_filter1d

    from vemrestore.metrics import plane_frc_resolution

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(32, 64, 64)).astype(np.float32)
    restored = gaussian_filter1d(truth, 2.0, axis=0) + 0.3 * rng.normal(size=truth.shape)
    full = plane_frc_resolution(
        restored, orientation="xz", voxel_size=(10, 10, 10), reference=truth
    )
    axial = plane_frc_resolution(
        restored, orientation="xz", voxel_size=(10, 10, 10), reference=truth, sector_deg=30
    )
    assert axial.crossed
    assert axial.resolution_nm > 1.5 * full.resolution_nm


def test_sector_needs_a_reference():
    from vemrestore.errors import UserInputError
    from vemrestore.metrics import plane_frc_resolution

    with pytest.raises(UserInputError, match="reference"):
        plane_frc_resolution(
            np.ones((32, 32, 32)), orientation="xz", voxel_size=(1, 1, 1), sector_deg=30
        )
