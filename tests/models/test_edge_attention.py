"""EdgeAttentionSRNet: shapes per factor, identity at start, bounded reach, blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vemrestore.models.edge_attention import EdgeAttentionSRNet, WindowTransformerBlock

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _small(scale_factor: int, **options) -> EdgeAttentionSRNet:
    options = {"channels": 8, "num_heads": 2, **options}
    return EdgeAttentionSRNet(scale_factor, **options)


def _randomise(net: torch.nn.Module) -> torch.nn.Module:
    # The head starts at zero; give every weight a value so the whole network acts.
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.2)
    return net.eval()


@pytest.mark.parametrize("scale_factor", [1, 2, 3, 4])
def test_output_shape_for_each_factor(scale_factor):
    net = _small(scale_factor)
    out = net(torch.rand(2, 1, 19, 13))
    assert out.shape == (2, 1, 19 * scale_factor, 13 * scale_factor)
    assert out.dtype == torch.float32


def test_untrained_network_returns_the_bilinear_upsampled_input():
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(_small(1)(x), x)
        expected = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        assert torch.allclose(_small(2)(x), expected)


def test_context_bounds_the_reach_of_an_input_pixel():
    net = _randomise(_small(2, num_transformer_blocks=2, num_residual_blocks=1))
    x = torch.rand(1, 1, 96, 96)
    y = x.clone()
    y[0, 0, 48, 48] += 1.0
    with torch.no_grad():
        changed = (net(x) - net(y)).abs()[0, 0] > 1e-6
    rows = torch.nonzero(changed.any(dim=1)).flatten()
    reach = (int(rows.max()) // 2 - 48, 48 - int(rows.min()) // 2)
    assert max(reach) <= net.context
    assert min(reach) > 0  # the perturbation does propagate


def test_a_block_with_context_aligned_to_the_windows_equals_the_whole_image():
    net = _randomise(_small(2))
    image = torch.rand(1, 1, 100, 90)
    c, w = net.context, net.size_multiple
    y0 = x0 = w  # block starts on window multiples
    with torch.no_grad():
        whole = net(image)
        block = net(image[..., y0:, x0 : x0 + 2 * c + 16])
    # Output rows/columns at least ``context`` away from the block's inner edges.
    expected = whole[..., 2 * (y0 + c) :, 2 * (x0 + c) : 2 * (x0 + c + 16)]
    got = block[..., 2 * c :, 2 * c : 2 * (c + 16)]
    assert torch.allclose(got, expected, atol=1e-5)


def test_shifted_windows_keep_rolled_in_pixels_apart():
    block = WindowTransformerBlock(8, window_size=4, num_heads=2, shift=True).eval()
    x = torch.rand(1, 8, 8, 8)
    y = x.clone()
    y[0, 0, 0] += 5.0  # first row rolls in next to the last row
    with torch.no_grad():
        diff = (block(x) - block(y)).abs().sum(dim=(0, 3))
    assert float(diff[1].max()) > 0.0  # the same window sees it
    assert float(diff[-1].max()) == 0.0  # the last row never sees the first


def test_training_step_reduces_the_loss():
    torch.manual_seed(0)
    net = _small(2)
    x = torch.rand(4, 1, 16, 16)
    target = F.interpolate(x, scale_factor=2, mode="nearest")
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = F.l1_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


def test_rejects_bad_options():
    with pytest.raises(ValueError, match="scale_factor"):
        EdgeAttentionSRNet(5)
    with pytest.raises(ValueError, match="divisible"):
        EdgeAttentionSRNet(2, channels=10, num_heads=4)
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        _small(2)(torch.rand(1, 2, 8, 8))
