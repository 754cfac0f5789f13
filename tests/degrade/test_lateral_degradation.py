import numpy as np
import pytest
import torch
from scipy import ndimage

from vemrestore.degrade import LateralDegradation
from vemrestore.errors import UserInputError


def _image(shape, seed=0):
    return np.random.default_rng(seed).random(shape).astype(np.float32) * 255


def test_bin_is_mean_of_factor_by_factor_blocks_after_crop():
    image = _image((13, 10))
    low, info = LateralDegradation(4).apply(image)
    expected = image[:12, :8].reshape(3, 4, 2, 4).mean(axis=(1, 3))
    assert low.dtype == np.float32 and low.shape == (3, 2)
    np.testing.assert_allclose(low, expected, rtol=1e-6)
    assert info.hr_shape == (12, 8) and info.scale_factor == 4 and info.psf_sigma is None


def test_decimate_takes_every_kth_pixel_of_the_blurred_image():
    image = _image((2, 16, 17))
    low, info = LateralDegradation(3, psf_sigma=1.2, mode="decimate").apply(image)
    cropped = image[:, :15, :15]
    blurred = np.stack([ndimage.gaussian_filter(plane, 1.2) for plane in cropped])
    np.testing.assert_allclose(low, blurred[:, ::3, ::3], rtol=1e-5, atol=1e-4)
    assert info.hr_shape == (2, 15, 15) and info.mode == "decimate"


def test_psf_blurs_only_the_last_two_axes():
    stack = np.zeros((5, 16, 16), np.float32)
    stack[2, 8, 8] = 1.0
    low, _ = LateralDegradation(1, psf_sigma=1.5).apply(stack)
    assert np.count_nonzero(low.sum(axis=(1, 2))) == 1  # no leak across the stack axis
    np.testing.assert_allclose(low[2].sum(), 1.0, rtol=1e-5)
    assert low[2, 8, 8] < 0.2


def test_stack_equals_per_slice_and_crop_is_consistent():
    stack = _image((3, 2, 20, 22))
    model = LateralDegradation(2, psf_sigma=0.8)
    low, info = model.apply(stack)
    per_slice = np.stack([[model.apply(p)[0] for p in s] for s in stack])
    np.testing.assert_allclose(low, per_slice, rtol=1e-5, atol=1e-4)
    again, _ = model.apply(model.crop(stack))
    np.testing.assert_array_equal(low, again)
    assert info.hr_shape == (3, 2, 20, 22)


@pytest.mark.parametrize("mode", ["bin", "decimate"])
@pytest.mark.parametrize("psf_sigma", [None, 0.7, 2.5])
def test_torch_and_numpy_agree(mode, psf_sigma):
    # 9 px is narrower than the sigma=2.5 kernel radius (10): reflection must repeat.
    stack = _image((2, 9, 14), seed=3)
    model = LateralDegradation(3, psf_sigma=psf_sigma, mode=mode)
    expected, info_np = model.apply(stack)
    result, info_t = model.apply(torch.from_numpy(stack))
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-3)
    assert info_np == info_t


def test_torch_integer_input_becomes_float32():
    image = torch.arange(36, dtype=torch.uint8).reshape(6, 6)
    low, _ = LateralDegradation(2).apply(image)
    assert low.dtype == torch.float32
    assert low[0, 0].item() == pytest.approx(3.5)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"scale_factor": 2.5}, "integer"),
        ({"scale_factor": 0}, "between 1 and 64"),
        ({"scale_factor": 65}, "between 1 and 64"),
        ({"scale_factor": 2, "psf_sigma": 0.0}, "psf_sigma"),
        ({"scale_factor": 2, "mode": "nearest"}, "mode"),
    ],
)
def test_invalid_options_are_rejected(options, match):
    with pytest.raises(UserInputError, match=match):
        LateralDegradation(**options)


@pytest.mark.parametrize("shape", [(8,), (3, 8)])
def test_too_small_or_1d_input_is_rejected(shape):
    with pytest.raises(UserInputError):
        LateralDegradation(4).apply(np.zeros(shape, np.float32))
