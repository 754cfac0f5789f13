"""The 3D network of D2R's stage III: thick sections in, fine slices out, no diffusion.

The network runs on the section grid (one voxel per thick section along z),
which makes it cheap: at factor ``k`` it sees ``k`` times fewer voxels than
the output. Its head predicts ``k`` channels per section that a depth shuffle
(the z analogue of pixel shuffle) lays out as the ``k`` fine slices of that
section; they are added onto the cubic upsample of the sections, so the
network learns only what interpolation misses.

- Anisotropic 3D convolutions (``AnisotropicConv3d``: in-plane, across-section
  and full kernels) in residual blocks.
- An edge gate: the à-trous detail bands of every section (its membranes and
  edges) modulate each residual block, so the blocks act where the detail is.
- A zero-initialised head: the untrained network returns the cubic upsample.
- No normalisation layers, so the network's output on a block equals that
  on the whole volume wherever the halo covers ``receptive_field``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.models._common import ConfiguredNetwork, zero_init
from vemrestore.models.anisotropic3d import AnisotropicConv3d
from vemrestore.models.wavelet import atrous_decompose, atrous_halo

__all__ = ["D2RNet3D", "depth_shuffle"]


def depth_shuffle(x: torch.Tensor, factor: int) -> torch.Tensor:
    """(N, k, D, H, W) -> (N, 1, D k, H, W): channel ``j`` of depth ``d`` becomes slice ``d k + j``.

    Examples
    --------
    >>> x = torch.arange(4.0).reshape(1, 2, 2, 1, 1)
    >>> depth_shuffle(x, 2).flatten().tolist()
    [0.0, 2.0, 1.0, 3.0]
    """
    n, channels, depth, height, width = x.shape
    if channels != factor:
        raise ValueError(f"depth_shuffle needs {factor} channels, got {channels}")
    return x.permute(0, 2, 1, 3, 4).reshape(n, 1, depth * factor, height, width)


class _GatedBlock(nn.Module):
    """``h + sigmoid(gate(edges)) * conv(act(conv(h)))``; the second convolution starts at zero."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = AnisotropicConv3d(channels, channels)
        self.conv2 = AnisotropicConv3d(channels, channels)
        with torch.no_grad():
            for weight in (self.conv2.inplane, self.conv2.axial, self.conv2.full):
                weight.zero_()
        self.gate = nn.Conv3d(channels, channels, 1)

    def forward(self, h: torch.Tensor, edges: torch.Tensor) -> torch.Tensor:
        update = self.conv2(F.silu(self.conv1(h)))
        return h + torch.sigmoid(self.gate(edges)) * update


class D2RNet3D(ConfiguredNetwork):
    """Residual over the cubic upsample of thick sections, predicted on the section grid.

    ``config`` holds the constructor arguments (see ``ConfiguredNetwork``).

    Parameters
    ----------
    factor : int
        Fine slices per section (the axial factor, an integer >= 2).
    channels : int
        Feature channels.
    num_blocks : int
        Gated residual blocks.
    wavelet_levels : int
        À-trous detail bands (scales 1, 2, 4... pixels) feeding the edge gate.

    Examples
    --------
    >>> net = D2RNet3D(4, channels=8, num_blocks=2)
    >>> sections, cubic = torch.zeros(1, 1, 3, 16, 16), torch.ones(1, 1, 12, 16, 16)
    >>> bool(torch.equal(net(sections, cubic), cubic))  # the untrained network adds nothing
    True
    >>> net.receptive_field
    (6, 13)
    """

    size_multiple = 1

    def __init__(
        self, factor: int, *, channels: int = 16, num_blocks: int = 4, wavelet_levels: int = 2
    ) -> None:
        super().__init__(
            {
                "factor": factor,
                "channels": channels,
                "num_blocks": num_blocks,
                "wavelet_levels": wavelet_levels,
            }
        )
        self.check_positive("sizes", "channels", "wavelet_levels")
        self.check_non_negative("block counts", "num_blocks")
        if factor < 2:
            raise ValueError(f"D2RNet3D needs an integer factor >= 2, got factor={factor}")
        self.factor = factor
        self.wavelet_levels = wavelet_levels
        self.stem = AnisotropicConv3d(1, channels)
        self.edges = AnisotropicConv3d(wavelet_levels, channels)
        self.blocks = nn.ModuleList(_GatedBlock(channels) for _ in range(num_blocks))
        self.head = zero_init(nn.Conv3d(channels, factor, 3, padding=1))

    @property
    def receptive_field(self) -> tuple[int, int]:
        """Context (sections along z, pixels along y and x) each side that an output reads."""
        return self.reach(len(self.blocks), self.wavelet_levels)

    @staticmethod
    def reach(num_blocks: int, wavelet_levels: int) -> tuple[int, int]:
        """``receptive_field`` of a network of ``num_blocks`` blocks and ``wavelet_levels`` bands.

        Every 3x3x3 convolution on the main path reads one voxel more each
        side; the edge path adds the wavelet's reach and its own convolution.
        """
        convolutions = 2 + 2 * num_blocks  # stem, blocks, head
        return convolutions, convolutions + 1 + atrous_halo(wavelet_levels)

    def edge_bands(self, sections: torch.Tensor) -> torch.Tensor:
        """À-trous detail bands of every section, (N, levels, D, H, W)."""
        n, _, depth, height, width = sections.shape
        planes = sections.permute(0, 2, 1, 3, 4).reshape(n * depth, 1, height, width)
        details, _ = atrous_decompose(planes, num_levels=self.wavelet_levels)
        bands = torch.cat(details, dim=1).reshape(n, depth, -1, height, width)
        return bands.permute(0, 2, 1, 3, 4)

    def forward(self, sections: torch.Tensor, cubic: torch.Tensor) -> torch.Tensor:
        """Fine volume (N, 1, D k, H, W) from sections (N, 1, D, H, W) and their cubic upsample."""
        depth = sections.shape[2]
        if cubic.shape[2] != depth * self.factor or cubic.shape[-2:] != sections.shape[-2:]:
            raise ValueError(
                f"cubic shape {tuple(cubic.shape)} does not match {depth} sections of "
                f"{tuple(sections.shape[-2:])} at factor {self.factor}"
            )
        edges = F.silu(self.edges(self.edge_bands(sections)))
        h = F.silu(self.stem(sections))
        for block in self.blocks:
            h = block(h, edges)
        return cubic + depth_shuffle(self.head(h), self.factor)
