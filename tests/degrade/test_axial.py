import numpy as np
import pytest
import torch

from vemrestore.degrade import AxialSectioning, section_centres, sectioning_matrix
from vemrestore.errors import UserInputError


@pytest.mark.parametrize("factor", [2, 3, 4, 8])
def test_box_sections_are_means_of_k_slices(factor):
    volume = np.random.default_rng(0).random((4 * factor + 1, 3, 5)).astype(np.float32)
    sections, info = AxialSectioning(factor).apply(volume)
    expected = volume[: 4 * factor].reshape(4, factor, 3, 5).mean(axis=1)
    assert sections.dtype == np.float32
    np.testing.assert_allclose(sections, expected, rtol=1e-6)
    assert info.num_fine == 4 * factor


@pytest.mark.parametrize("profile", ["box", "gaussian"])
@pytest.mark.parametrize("factor", [2, 4, 5.5, 6.25])
def test_matrix_rows_sum_to_one(profile, factor):
    weights = sectioning_matrix(50, factor, profile=profile)
    assert weights.shape == (int(50 // factor), 50)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, atol=1e-12)
    assert (weights >= 0).all()


def test_non_integer_factor_has_exact_overlap_weights_and_centres():
    # Sections of 6.25 slices: [0, 6.25), [6.25, 12.5), [12.5, 18.75), [18.75, 25).
    weights = sectioning_matrix(25, 6.25)
    expected = np.zeros((4, 25))
    expected[0, :6], expected[0, 6] = 1, 0.25
    expected[1, 6], expected[1, 7:12], expected[1, 12] = 0.75, 1, 0.5
    expected[2, 12], expected[2, 13:18], expected[2, 18] = 0.5, 1, 0.75
    expected[3, 18], expected[3, 19:] = 0.25, 1
    np.testing.assert_allclose(weights, expected / 6.25, atol=1e-12)
    np.testing.assert_allclose(section_centres(4, 6.25), [2.625, 8.875, 15.125, 21.375])
    _, info = AxialSectioning(6.25).apply(np.zeros((25, 2, 2), np.float32))
    np.testing.assert_allclose(info.centres, [2.625, 8.875, 15.125, 21.375])
    assert info.num_fine == 25


@pytest.mark.parametrize("factor", [3, 4])
def test_gaussian_profile_is_centred_on_section_centres(factor):
    weights = sectioning_matrix(60, factor, profile="gaussian", fwhm=factor)
    centres = section_centres(weights.shape[0], factor)
    j = np.arange(60)
    # Interior sections, where the 4-sigma support is not cut by the volume ends.
    for row, centre in zip(weights[2:-2], centres[2:-2], strict=True):
        np.testing.assert_allclose(row @ j, centre, atol=1e-9)
        assert abs(j[np.argmax(row)] - centre) <= 0.5


@pytest.mark.parametrize("profile", ["box", "gaussian"])
def test_torch_and_numpy_agree(profile):
    volume = np.random.default_rng(1).random((25, 4, 6)).astype(np.float32)
    model = AxialSectioning(6.25, profile=profile)
    expected, _ = model.apply(volume)
    result, _ = model.apply(torch.from_numpy(volume))
    assert isinstance(result, torch.Tensor) and result.dtype == torch.float32
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("factor", [1, 0.5, -2, 64.5, 100, float("nan")])
def test_factor_out_of_range_is_rejected(factor):
    with pytest.raises(UserInputError, match="scale factor"):
        AxialSectioning(factor)


def test_works_on_any_axis():
    volume = np.random.default_rng(2).random((6, 12, 8)).astype(np.float32)
    along_z, _ = AxialSectioning(3, axis=0).apply(np.moveaxis(volume, 1, 0))
    along_y, info = AxialSectioning(3, axis=1).apply(volume)
    along_last, _ = AxialSectioning(3, axis=-1).apply(np.moveaxis(volume, 1, -1))
    assert along_y.shape == (6, 4, 8) and info.axis == 1
    np.testing.assert_allclose(along_y, volume.reshape(6, 4, 3, 8).mean(axis=2), rtol=1e-6)
    np.testing.assert_allclose(np.moveaxis(along_z, 0, 1), along_y, rtol=1e-6)
    np.testing.assert_allclose(np.moveaxis(along_last, -1, 1), along_y, rtol=1e-6)
