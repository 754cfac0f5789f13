"""PSNR, SSIM and per-orientation scores."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scipy import ndimage as ndi

from vemrestore.errors import UserInputError
from vemrestore.metrics import orientation_scores, peak_signal_noise_ratio, structural_similarity


def _smooth_volume(shape=(24, 24, 24), seed=0) -> np.ndarray:
    """A structured float32 volume in [0, 1]."""
    field = ndi.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    field = (field - field.min()) / (field.max() - field.min())
    return field.astype(np.float32)


def test_import_does_not_pull_in_torch():
    code = "import sys, vemrestore.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_psnr_of_identical_arrays_is_inf():
    vol = _smooth_volume()
    assert peak_signal_noise_ratio(vol, vol.copy(), data_range=1.0) == np.inf


def test_psnr_of_known_mse_is_exact():
    ref = np.zeros((8, 8, 8), dtype=np.float32)
    test = ref.copy()
    test[::2] = 2.0  # half the voxels off by 2: MSE = 2
    expected = 10 * np.log10(4.0**2 / 2.0)
    assert peak_signal_noise_ratio(ref, test, data_range=4.0) == pytest.approx(expected, abs=1e-12)


def test_psnr_integer_input_uses_the_dtype_range():
    ref = np.zeros((4, 4), dtype=np.uint8)
    test = np.full((4, 4), 3, dtype=np.uint8)
    expected = 10 * np.log10(255.0**2 / 9.0)
    assert peak_signal_noise_ratio(ref, test) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("metric", [peak_signal_noise_ratio, structural_similarity])
def test_float_input_without_data_range_raises(metric):
    vol = _smooth_volume()
    with pytest.raises(UserInputError, match="data_range"):
        metric(vol, vol)


def test_mixed_integer_and_float_without_data_range_raises():
    ref = np.zeros((16, 16), dtype=np.uint8)
    with pytest.raises(UserInputError, match="data_range"):
        peak_signal_noise_ratio(ref, ref.astype(np.float32))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_data_range_raises(bad):
    vol = _smooth_volume()
    with pytest.raises(UserInputError, match="data_range"):
        peak_signal_noise_ratio(vol, vol, data_range=bad)


@pytest.mark.parametrize("metric", [peak_signal_noise_ratio, structural_similarity])
def test_shape_mismatch_raises_naming_both_shapes(metric):
    a = np.zeros((16, 16, 16), dtype=np.float32)
    b = np.zeros((16, 16, 15), dtype=np.float32)
    with pytest.raises(UserInputError, match=r"\(16, 16, 16\).*\(16, 16, 15\)"):
        metric(a, b, data_range=1.0)


def test_wrong_dimensionality_raises():
    with pytest.raises(UserInputError, match="2D or 3D"):
        peak_signal_noise_ratio(np.zeros(8), np.zeros(8), data_range=1.0)


def test_ssim_of_identical_is_one_and_decreases_with_noise():
    vol = _smooth_volume()
    rng = np.random.default_rng(1)
    noise = rng.normal(size=vol.shape).astype(np.float32)
    scores = [structural_similarity(vol, vol + s * noise, data_range=1.0) for s in (0, 0.02, 0.1)]
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert scores[0] > scores[1] > scores[2]


def test_ssim_2d_matches_wang_settings_in_skimage():
    from skimage.metrics import structural_similarity as sk_ssim

    ref = _smooth_volume((1, 32, 32))[0]
    test = ref + np.random.default_rng(2).normal(0, 0.05, ref.shape).astype(np.float32)
    expected = sk_ssim(
        ref, test, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
    )
    assert structural_similarity(ref, test, data_range=1.0) == pytest.approx(expected, rel=1e-6)


def test_ssim_too_small_for_the_window_raises():
    vol = np.zeros((8, 32, 32), dtype=np.float32)
    with pytest.raises(UserInputError, match="11"):
        structural_similarity(vol, vol, data_range=1.0)


def test_orientation_scores_keys_and_identity():
    vol = _smooth_volume()
    scores = orientation_scores(vol, vol, data_range=1.0)
    assert set(scores) == {"psnr_xy", "psnr_xz", "psnr_yz", "ssim_xy", "ssim_xz", "ssim_yz"}
    assert all(scores[f"psnr_{o}"] == np.inf for o in ("xy", "xz", "yz"))
    assert all(scores[f"ssim_{o}"] == pytest.approx(1.0, abs=1e-6) for o in ("xy", "xz", "yz"))


def test_orientation_scores_are_means_over_planes():
    vol = _smooth_volume()
    rng = np.random.default_rng(3)
    test = vol + rng.normal(0, 0.02, vol.shape).astype(np.float32)
    test[5] += 0.3  # one damaged XY plane: worse for psnr_xy's one plane than for every XZ plane
    scores = orientation_scores(vol, test, data_range=1.0)
    psnr_xy = np.mean([peak_signal_noise_ratio(vol[z], test[z], data_range=1.0) for z in range(24)])
    ssim_yz = np.mean(
        [structural_similarity(vol[:, :, x], test[:, :, x], data_range=1.0) for x in range(24)]
    )
    assert scores["psnr_xy"] == pytest.approx(psnr_xy, rel=1e-9)
    assert scores["ssim_yz"] == pytest.approx(ssim_yz, rel=1e-5)
    assert scores["psnr_xy"] > scores["psnr_xz"] + 1.0
    assert scores["psnr_xz"] == pytest.approx(scores["psnr_yz"], abs=0.5)
    assert 0 < scores["ssim_xz"] < 1


def test_orientation_scores_needs_a_volume():
    with pytest.raises(UserInputError, match="3D"):
        orientation_scores(np.zeros((16, 16)), np.zeros((16, 16)), data_range=1.0)
