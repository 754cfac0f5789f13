"""Tests of the anisotropic 3D diffusion network and its blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vemrestore.models.anisotropic3d import (
    AnisotropicConv3d,
    AnisotropicDenoiser3D,
    BoundaryAttention,
)


def test_merged_kernel_equals_the_three_branches():
    torch.manual_seed(0)
    conv = AnisotropicConv3d(3, 5)
    x = torch.randn(2, 3, 4, 9, 7)
    branches = (
        F.conv3d(x, conv.inplane, padding=(0, 1, 1))
        + F.conv3d(x, conv.axial, padding=(1, 0, 0))
        + F.conv3d(x, conv.full, conv.bias, padding=1)
    )
    torch.testing.assert_close(conv(x), branches, atol=1e-5, rtol=1e-5)
    # Each branch has its own gradient.
    conv(x).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in conv.parameters())


def test_boundary_attention_starts_as_identity_and_weighs_the_two_sides():
    torch.manual_seed(0)
    attention = BoundaryAttention(8, num_heads=2)
    h = torch.randn(2, 8, 5, 6, 6)  # one context section each side of a 3-section gap
    torch.testing.assert_close(attention(h, 1), h)
    weights = attention.last_weights
    assert weights.shape == (2, 2, 3, 6, 6)
    assert bool(((weights >= 0) & (weights <= 1)).all())
    # With identical boundary sections both sides weigh the same.
    h[:, :, 4] = h[:, :, 0]
    attention(h, 1)
    torch.testing.assert_close(attention.last_weights, torch.full_like(weights, 0.5))
    # After training the output projection, only the gap sections change.
    torch.nn.init.normal_(attention.out.weight)
    out = attention(h, 1)
    torch.testing.assert_close(out[:, :, [0, 4]], h[:, :, [0, 4]])
    assert not torch.allclose(out[:, :, 1:4], h[:, :, 1:4])


def test_boundary_attention_needs_a_gap():
    with pytest.raises(ValueError, match="no gap"):
        BoundaryAttention(4, num_heads=1)(torch.zeros(1, 4, 2, 4, 4), 1)


@pytest.mark.parametrize("gap", [1, 2])
def test_denoiser_shapes_and_joint_estimate(gap):
    torch.manual_seed(0)
    net = AnisotropicDenoiser3D(4, num_context=1, base_channels=8, depth=1, num_heads=3)
    for p in net.parameters():  # make the zero-initialised outputs non-trivial
        torch.nn.init.normal_(p, std=0.1)
    x = torch.randn(2, 4, 2 + gap, 16, 16)
    out = net(x, torch.tensor([3, 800]))
    assert out.joint.shape == (2, 1, 2 + gap, 16, 16)
    assert out.heads.shape == (2, 3, 2 + gap, 16, 16)
    # The joint estimate is a convex combination of the heads.
    assert bool((out.joint >= out.heads.min(dim=1, keepdim=True).values - 1e-5).all())
    assert bool((out.joint <= out.heads.max(dim=1, keepdim=True).values + 1e-5).all())
    assert not torch.allclose(out.heads[:, 0], out.heads[:, 1])


def test_denoiser_untrained_output_is_zero_and_config_rebuilds_it():
    net = AnisotropicDenoiser3D(4, num_context=2, base_channels=8, depth=2, patch_size=2)
    with torch.no_grad():
        out = net(torch.randn(1, 4, 5, 16, 16), torch.tensor([10]))
    assert float(out.joint.abs().max()) == 0.0
    copy = AnisotropicDenoiser3D(**net.config)
    copy.load_state_dict(net.state_dict())
    assert copy.config == net.config


def test_denoiser_rejects_bad_sizes():
    net = AnisotropicDenoiser3D(4, num_context=1, base_channels=8, depth=2, patch_size=2)
    with pytest.raises(ValueError, match="multiples of 8"):
        net(torch.zeros(1, 4, 3, 12, 16), torch.tensor([1]))
    with pytest.raises(ValueError, match="too small"):
        net(torch.zeros(1, 4, 2, 16, 16), torch.tensor([1]))
