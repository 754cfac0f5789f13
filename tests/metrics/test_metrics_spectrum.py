"""Radial power spectra, spectrum log error and high-frequency ratio."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from vemrestore.errors import UserInputError
from vemrestore.metrics import radial_power_spectrum, spectrum_log_error, z_hf_ratio


def _volume(shape=(32, 32, 32), seed=0) -> np.ndarray:
    """A lightly smoothed random float32 volume in roughly [0, 1]."""
    rng = np.random.default_rng(seed)
    return ndi.gaussian_filter(rng.random(shape), 0.7).astype(np.float32)


def test_radial_spectrum_frequencies_and_anisotropic_pixels():
    planes = _volume()[:4]
    freqs, log_power = radial_power_spectrum(planes, voxel_size=2.0)
    assert freqs.shape == log_power.shape == (16,)
    assert freqs[0] == pytest.approx(1 / 64) and freqs[-1] == pytest.approx(0.25)
    assert log_power[0] > log_power[-1]  # smoothed: power falls with frequency
    rect = np.zeros((2, 16, 32), dtype=np.float32)
    rect[:, 8, :] = 1.0
    freqs, _ = radial_power_spectrum(rect, voxel_size=(10.0, 5.0))
    assert freqs[0] == pytest.approx(1 / 160) and freqs[-1] == pytest.approx(0.05)


def test_spectrum_log_error_zero_for_identical_and_grows_with_blur():
    truth = _volume()
    zero = spectrum_log_error(truth, truth.copy(), voxel_size=1.0)
    assert set(zero) == {"spectrum_log_error"} | {f"spectrum_log_error_band{i}" for i in range(8)}
    assert all(value == 0.0 for value in zero.values())
    errors = [
        spectrum_log_error(ndi.gaussian_filter(truth, s), truth, voxel_size=1.0)
        for s in (0.5, 1.0, 2.0)
    ]
    overall = [e["spectrum_log_error"] for e in errors]
    assert 0 < overall[0] < overall[1] < overall[2]
    assert errors[2]["spectrum_log_error_band7"] > errors[2]["spectrum_log_error_band0"]


def test_z_hf_ratio_blur_truth_and_noise():
    truth = _volume()
    assert z_hf_ratio(truth, truth) == 1.0
    blurred = ndi.gaussian_filter1d(truth, 2.0, axis=0)
    assert z_hf_ratio(blurred, truth) < 0.5
    noisy = truth + np.random.default_rng(1).normal(0, 0.05, truth.shape).astype(np.float32)
    assert z_hf_ratio(noisy, truth) > 1.0


@pytest.mark.parametrize(
    "call",
    [
        lambda: spectrum_log_error(np.zeros((2, 8, 8)), np.zeros((2, 8, 9)), voxel_size=1.0),
        lambda: spectrum_log_error(np.ones((8, 8)), np.ones((8, 8)), voxel_size=1.0, bands=99),
        lambda: radial_power_spectrum(np.zeros((8, 8)), voxel_size=0.0),
        lambda: radial_power_spectrum(np.zeros((2, 2)), voxel_size=1.0),
        lambda: z_hf_ratio(np.zeros((8, 4, 4)), np.zeros((8, 4, 5))),
        lambda: z_hf_ratio(np.ones((8, 4, 4)), np.ones((8, 4, 4))),
        lambda: z_hf_ratio(np.ones((8, 4, 4)), np.ones((8, 4, 4)), cutoff=1.0),
        lambda: z_hf_ratio(np.ones((8, 4, 4)), np.ones((8, 4, 4)), axis=3),
    ],
)
def test_bad_input_raises_one_line_user_input_error(call):
    with pytest.raises(UserInputError) as info:
        call()
    assert "\n" not in str(info.value)
