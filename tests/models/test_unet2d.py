"""Tests of the 2D U-Net and its padding helper."""

from __future__ import annotations

import pytest
import torch

from vemrestore.models import UNet2D, pad_to_multiple


@pytest.mark.parametrize(("height", "width"), [(17, 30), (9, 41), (32, 8)])
def test_odd_sizes_after_padding_keep_their_shape(height, width):
    net = UNet2D(3, 2, base_channels=4, depth=3)
    x = torch.randn(2, 3, height, width)
    padded = pad_to_multiple(x, net.size_multiple)
    assert padded.shape[-2] % 8 == 0 and padded.shape[-1] % 8 == 0
    assert padded.shape[-2] - height < 8 and padded.shape[-1] - width < 8
    torch.testing.assert_close(padded[..., :height, :width], x)
    y = net(padded)[..., :height, :width]
    assert y.shape == (2, 2, height, width)


def test_reflect_padding_where_possible_and_replicate_for_tiny_inputs():
    x = torch.arange(10.0).reshape(1, 1, 1, 10)
    assert pad_to_multiple(x.expand(1, 1, 4, 10), 4)[0, 0, 0, 10:].tolist() == [8.0, 7.0]
    tiny = pad_to_multiple(torch.ones(1, 1, 3, 3) * 5, 8)
    assert tiny.shape == (1, 1, 8, 8) and torch.all(tiny == 5)


def test_unpadded_input_is_refused():
    with pytest.raises(ValueError, match="multiples of 4"):
        UNet2D(1, 1, base_channels=4, depth=2)(torch.zeros(1, 1, 10, 12))


def test_config_round_trip_and_zero_initial_output():
    net = UNet2D(1, 1, base_channels=4, depth=2)
    again = UNet2D(**net.config)
    again.load_state_dict(net.state_dict())
    assert net.config == {
        "in_channels": 1,
        "out_channels": 1,
        "base_channels": 4,
        "depth": 2,
        "space_to_depth": 1,
    }
    assert torch.all(net(torch.randn(1, 1, 16, 16)) == 0)


def test_space_to_depth_keeps_the_shape_and_needs_its_larger_multiple():
    net = UNet2D(2, 3, base_channels=4, depth=2, space_to_depth=2)
    assert net.size_multiple == 8
    assert torch.all(net(torch.randn(1, 2, 16, 24)) == 0)  # zero head: silent at the start
    torch.nn.init.normal_(net.head.weight)
    out = net(torch.randn(2, 2, 16, 24))
    assert out.shape == (2, 3, 16, 24)
    # The four pixels of a 2x2 block get their own outputs, not one value repeated.
    assert not torch.allclose(out[..., 0::2, 0::2], out[..., 1::2, 1::2])
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 2, 12, 16))


def test_trains_to_fit_a_shift():
    torch.manual_seed(0)
    net = UNet2D(1, 1, base_channels=4, depth=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    x = torch.randn(4, 1, 16, 16)
    target = torch.roll(x, 1, dims=-1)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.mse_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]
