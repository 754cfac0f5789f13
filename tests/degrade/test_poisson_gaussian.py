import warnings

import numpy as np
import pytest
import torch

from vemrestore.degrade import NoiseEstimate, PoissonGaussianNoise, estimate_poisson_gaussian
from vemrestore.errors import UserInputError


def _smooth_image(shape=(256, 256), seed=0):
    """A ramp (30..180) plus a few wide Gaussian blobs: almost no high-pass content."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float32)
    image = 30 + 150 * x / shape[1]
    for _ in range(6):
        cy, cx = rng.uniform(0, shape[0]), rng.uniform(0, shape[1])
        width = rng.uniform(20, 50)
        image = image + rng.uniform(-30, 50) * np.exp(
            -((y - cy) ** 2 + (x - cx) ** 2) / (2 * width**2)
        )
    return image.astype(np.float32)


def test_noise_has_the_model_mean_and_variance():
    clean = np.full((200, 200), 80.0, np.float32)
    clean[:, 100:] = 160.0
    noisy, info = PoissonGaussianNoise(gain=2.0, sigma=5.0).apply(clean, rng=0)
    assert noisy.dtype == np.float32 and info.gain == 2.0 and info.sigma == 5.0
    for level, part in [(80.0, noisy[:, :100]), (160.0, noisy[:, 100:])]:
        assert part.mean() == pytest.approx(level, abs=0.3)
        assert part.var() == pytest.approx(2.0 * level + 25.0, rel=0.05)


def test_same_seed_same_noise_and_input_untouched():
    clean = _smooth_image((32, 32))
    before = clean.copy()
    model = PoissonGaussianNoise(gain=1.5, sigma=2.0)
    first, _ = model.apply(clean, rng=7)
    second, _ = model.apply(clean, rng=np.random.default_rng(7))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, model.apply(clean, rng=8)[0])
    np.testing.assert_array_equal(clean, before)


def test_torch_noise_uses_the_generator_and_has_the_model_variance():
    clean = torch.full((256, 256), 100.0)
    model = PoissonGaussianNoise(gain=0.5, sigma=3.0)
    first, _ = model.apply(clean, generator=torch.Generator().manual_seed(0))
    second, _ = model.apply(clean, generator=torch.Generator().manual_seed(0))
    assert first.dtype == torch.float32
    assert torch.equal(first, second)
    assert first.mean().item() == pytest.approx(100.0, abs=0.2)
    assert first.var().item() == pytest.approx(0.5 * 100 + 9, rel=0.05)


@pytest.mark.parametrize(("gain", "sigma"), [(-1.0, 1.0), (0.0, 1.0), (1.0, -0.1)])
def test_invalid_noise_parameters_are_rejected(gain, sigma):
    with pytest.raises(UserInputError):
        PoissonGaussianNoise(gain=gain, sigma=sigma)


@pytest.mark.parametrize(("gain", "sigma"), [(1.0, 8.0), (0.5, 6.0), (3.0, 10.0)])
def test_estimate_recovers_known_parameters_on_a_smooth_image(gain, sigma):
    clean = _smooth_image()
    noisy, _ = PoissonGaussianNoise(gain=gain, sigma=sigma).apply(clean, rng=1)
    estimate = estimate_poisson_gaussian(noisy)
    assert estimate.gain == pytest.approx(gain, rel=0.2)
    assert estimate.sigma == pytest.approx(sigma, rel=0.2)


def test_estimate_on_a_stack_pools_the_slices():
    clean = np.stack([_smooth_image((128, 128), seed=s) for s in range(4)])
    noisy, _ = PoissonGaussianNoise(gain=2.0, sigma=6.0).apply(clean, rng=2)
    estimate = estimate_poisson_gaussian(noisy)
    assert estimate.gain == pytest.approx(2.0, rel=0.2)
    assert estimate.sigma == pytest.approx(6.0, rel=0.2)
    assert estimate.means.shape == estimate.variances.shape == (32,)
    assert isinstance(estimate.noise_model(), PoissonGaussianNoise)


def test_estimate_rejects_bad_input():
    with pytest.raises(UserInputError, match="image"):
        estimate_poisson_gaussian(np.zeros(100, np.float32))
    with pytest.raises(UserInputError, match="num_bins"):
        estimate_poisson_gaussian(np.zeros((64, 64), np.float32), num_bins=2)
    with pytest.raises(UserInputError, match="finite"):
        estimate_poisson_gaussian(np.full((64, 64), np.nan, np.float32))


def _medulla_slice(real_path):
    import tifffile

    volume = tifffile.imread(real_path("medulla_sample2"))
    return volume[len(volume) // 2].astype(np.float32)


@pytest.mark.realdata
def test_real_slice_estimate_is_finite_and_grows_with_added_noise(real_path):
    image = _medulla_slice(real_path)
    with warnings.catch_warnings():
        # This FIB-SEM slice is contrast-inverted (variance falls with intensity).
        warnings.simplefilter("ignore", UserWarning)
        base = estimate_poisson_gaussian(image)
        extra = np.random.default_rng(0).normal(0, 10, image.shape).astype(np.float32)
        noisier = estimate_poisson_gaussian(image + extra)
    for estimate in (base, noisier):
        assert isinstance(estimate, NoiseEstimate)
        assert np.isfinite([estimate.gain, estimate.sigma]).all()
        assert estimate.gain >= 0 and estimate.sigma > 0
    levels = np.percentile(image, [25, 50, 75])
    added = noisier.variance(levels) - base.variance(levels)
    np.testing.assert_allclose(added, 100.0, rtol=0.3)


@pytest.mark.realdata
def test_inverted_contrast_is_reported_and_its_inverse_has_positive_gain(real_path):
    image = _medulla_slice(real_path)
    with pytest.warns(UserWarning, match="contrast-inverted"):
        estimate_poisson_gaussian(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        inverse = estimate_poisson_gaussian(255.0 - image)
    assert inverse.gain > 0 and inverse.sigma > 0
