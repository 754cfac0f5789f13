"""À-trous wavelet transform: exact reconstruction, constant images, reach."""

from __future__ import annotations

import pytest
import torch

from vemrestore.models.wavelet import atrous_decompose, atrous_halo


@pytest.mark.parametrize("shape", [(2, 1, 40, 33), (1, 3, 12, 9), (1, 1, 5, 6)])
def test_detail_bands_sum_back_to_the_image(shape):
    image = torch.rand(shape, generator=torch.Generator().manual_seed(0)) * 255
    details, approximation = atrous_decompose(image, num_levels=3)
    assert len(details) == 3
    assert all(d.shape == image.shape for d in details)
    assert torch.allclose(sum(details) + approximation, image, atol=1e-4)


def test_detail_bands_of_a_constant_image_are_zero():
    details, approximation = atrous_decompose(torch.full((1, 1, 24, 24), 7.0))
    assert max(float(d.abs().max()) for d in details) < 1e-5
    assert torch.allclose(approximation, torch.full_like(approximation, 7.0))


def test_bands_are_band_limited():
    # Fine noise sits mostly in the first band, a slow ramp in the approximation.
    noise = torch.randn(1, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    details, _ = atrous_decompose(noise)
    energies = [float((d**2).mean()) for d in details]
    assert energies[0] > energies[1] > energies[2]


def test_a_pixel_reaches_no_further_than_the_halo():
    image = torch.zeros(1, 1, 64, 64)
    image[0, 0, 32, 32] = 1.0
    details, _ = atrous_decompose(image, num_levels=3)
    rows = torch.nonzero(details[-1][0, 0].abs().sum(dim=1) > 0).flatten()
    halo = atrous_halo(3)
    assert halo == 14
    assert int(rows.min()) == 32 - halo and int(rows.max()) == 32 + halo


def test_rejects_bad_input():
    with pytest.raises(ValueError, match="floating-point"):
        atrous_decompose(torch.zeros(4, 4))
    with pytest.raises(ValueError, match="num_levels"):
        atrous_decompose(torch.zeros(1, 1, 8, 8), num_levels=0)
