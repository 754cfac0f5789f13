"""Tests of the conditional diffusion U-Net and its timestep embedding."""

from __future__ import annotations

import pytest
import torch

from vemrestore.models import pad_to_multiple
from vemrestore.models.cond_unet import ConditionalUNet2D, timestep_embedding


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two torch threads on a busy 2-core machine ran these tests many times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomised(net: ConditionalUNet2D, std: float = 0.2) -> ConditionalUNet2D:
    """Random weights everywhere (the zero-initialised layers included)."""
    torch.manual_seed(0)
    for p in net.parameters():
        torch.nn.init.normal_(p, std=std)
    return net


def test_timestep_embedding_is_sinusoidal():
    emb = timestep_embedding(torch.tensor([0, 1, 500]), 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    torch.testing.assert_close(emb[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    torch.testing.assert_close(emb[1, 0], torch.cos(torch.tensor(1.0)))  # fastest frequency is 1
    assert not torch.allclose(emb[1], emb[2])
    with pytest.raises(ValueError, match="even"):
        timestep_embedding(torch.tensor([0]), 7)


@pytest.mark.parametrize(("height", "width"), [(17, 30), (9, 41)])
def test_padded_odd_sizes_keep_their_shape(height, width):
    net = ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2)
    x, cond = torch.randn(2, 1, height, width), torch.randn(2, 2, height, width)
    out = net(pad_to_multiple(x, 4), torch.tensor([3, 900]), pad_to_multiple(cond, 4))
    assert out[..., :height, :width].shape == (2, 1, height, width)


def test_untrained_output_is_zero_and_config_round_trips():
    net = ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2)
    x, cond = torch.randn(2, 1, 16, 16), torch.randn(2, 2, 16, 16)
    assert torch.all(net(x, torch.tensor([0, 10]), cond) == 0)
    assert net.config == {
        "in_channels": 1,
        "cond_channels": 2,
        "out_channels": 1,
        "base_channels": 4,
        "depth": 2,
        "time_channels": 16,
    }
    _randomised(net)
    again = ConditionalUNet2D(**net.config)
    again.load_state_dict(net.state_dict())
    torch.testing.assert_close(again(x, torch.tensor([5, 5]), cond), net(x, torch.tensor(5), cond))


def test_output_depends_on_timestep_and_condition():
    net = _randomised(ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2))
    x, cond = torch.randn(1, 1, 16, 16), torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        base = net(x, torch.tensor([10]), cond)
        later = net(x, torch.tensor([800]), cond)
        other = net(x, torch.tensor([10]), cond + 1)
    assert (base - later).abs().max() > 1e-3
    assert (base - other).abs().max() > 1e-3


def test_far_from_the_edges_a_crop_gives_the_same_output():
    # No normalisation layers: the centre of a large plane does not depend on
    # how much of the plane is seen (crops aligned to the pooling grid).
    net = _randomised(ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2), std=0.1)
    x, cond = torch.randn(1, 1, 96, 96), torch.randn(1, 2, 96, 96)
    t = torch.tensor([100])
    with torch.no_grad():
        whole = net(x, t, cond)
        crop = net(x[..., 16:80, 24:88], t, cond[..., 16:80, 24:88])
    torch.testing.assert_close(crop[..., 24:40, 24:40], whole[..., 40:56, 48:64])


def test_a_few_steps_fit_a_fixed_target():
    torch.manual_seed(0)
    net = ConditionalUNet2D(1, 2, 1, base_channels=4, depth=1)
    x, cond, t = torch.randn(4, 1, 8, 8), torch.randn(4, 2, 8, 8), torch.tensor([1, 2, 3, 4])
    target = cond[:, :1] * 0.5
    optimiser = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.mse_loss(net(x, t, cond), target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


def test_bad_inputs_are_refused():
    net = ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2)
    with pytest.raises(ValueError, match="multiples of 4"):
        net(torch.zeros(1, 1, 10, 12), torch.tensor([0]), torch.zeros(1, 2, 10, 12))
    with pytest.raises(ValueError, match="2 conditioning channels, got 1"):
        net(torch.zeros(1, 1, 8, 8), torch.tensor([0]), torch.zeros(1, 1, 8, 8))
    with pytest.raises(ValueError, match="2 conditioning channels, got 0"):
        net(torch.zeros(1, 1, 8, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="positive channel"):
        ConditionalUNet2D(1, 2, 0)
