"""The 3D network of D2R: depth shuffle, zero start, declared receptive field."""

import pytest
import torch

from vemrestore.models.d2r3d import D2RNet3D, depth_shuffle


def _perturbed(net: D2RNet3D, seed: int = 0) -> D2RNet3D:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.2 * torch.randn(parameter.shape, generator=generator))
    return net.eval()


def test_depth_shuffle_lays_channel_j_of_section_d_at_slice_d_k_plus_j():
    x = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(1, 3, 4, 1, 2)
    out = depth_shuffle(x, 3)
    assert out.shape == (1, 1, 12, 1, 2)
    for d in range(4):
        for j in range(3):
            assert torch.equal(out[0, 0, d * 3 + j], x[0, j, d])
    with pytest.raises(ValueError, match="3 channels"):
        depth_shuffle(x[:, :2], 3)


def test_untrained_network_returns_the_cubic_input():
    net = D2RNet3D(4, channels=4, num_blocks=2)
    sections, cubic = torch.randn(2, 1, 3, 10, 12), torch.randn(2, 1, 12, 10, 12)
    assert torch.equal(net(sections, cubic), cubic)


def test_mismatched_cubic_is_refused():
    net = D2RNet3D(4, channels=4, num_blocks=1)
    with pytest.raises(ValueError, match="does not match"):
        net(torch.zeros(1, 1, 3, 8, 8), torch.zeros(1, 1, 11, 8, 8))


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="factor >= 2"):
        D2RNet3D(1)
    with pytest.raises(ValueError, match="positive"):
        D2RNet3D(4, channels=0)


def test_outputs_depend_only_on_inputs_within_the_receptive_field():
    net = _perturbed(D2RNet3D(2, channels=4, num_blocks=1, wavelet_levels=1))
    reach_z, reach_yx = net.receptive_field
    depth, size = 2 * reach_z + 5, 2 * reach_yx + 9
    sections = torch.randn(1, 1, depth, size, size)
    cubic = torch.randn(1, 1, 2 * depth, size, size)
    changed = sections.clone()
    centre = (depth // 2, size // 2, size // 2)
    changed[0, 0, centre[0], centre[1], centre[2]] += 5.0
    with torch.no_grad():
        diff = (net(changed, cubic) - net(sections, cubic)).abs()[0, 0]
    touched = diff.nonzero()
    assert len(touched) > 0
    # Fine slice f belongs to section f // 2.
    assert (touched[:, 0] // 2 - centre[0]).abs().max() <= reach_z
    assert (touched[:, 1:] - torch.tensor(centre[1:])).abs().max() <= reach_yx


def test_config_rebuilds_the_same_network():
    net = D2RNet3D(3, channels=6, num_blocks=2, wavelet_levels=3)
    again = D2RNet3D(**net.config)
    assert again.config == net.config
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in net.parameters())
