"""The boundary (membrane) network the evaluation segments and compares with.

A `UNet2D` that predicts one logit per pixel (boundary or not) and, from its
encoder, a descriptor per image: the mean and the standard deviation of each
bottleneck channel. Those descriptors are the features of the project's own
perceptual distance (KID), trained on EM rather than on photographs.
"""

from __future__ import annotations

import torch

from vemrestore.models.unet2d import UNet2D

__all__ = ["BoundaryNet"]


class BoundaryNet(UNet2D):
    """2D U-Net with one output channel (boundary logit) and an encoder descriptor.

    Examples
    --------
    >>> net = BoundaryNet(1, 1, base_channels=4, depth=2)
    >>> net.features(torch.zeros(3, 1, 16, 16)).shape
    torch.Size([3, 32])
    """

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Per-image descriptor, shape (N, 2 * bottleneck channels)."""
        self.check_size_multiple(x)
        h = self.inc(x)
        for down in self.downs:
            h = down(h)
        flat = h.flatten(2)
        return torch.cat([flat.mean(-1), flat.std(-1, unbiased=False)], dim=1)
