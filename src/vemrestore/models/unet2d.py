"""A plain 2D U-Net for image-to-image regression.

No normalisation layers: GroupNorm or BatchNorm statistics depend on the image
extent (or the batch), so a plane predicted whole and the same plane predicted
in overlapping blocks would differ. Each level has two 3x3 convolutions with
SiLU; down-sampling is 2x2 max pooling, up-sampling bilinear followed by a
convolution, and skips are concatenated. The output layer starts at zero, so
an untrained residual network returns its input unchanged.

``space_to_depth=2`` folds each 2x2 block of pixels into channels before the
first layer and unfolds the output the same way (pixel shuffle): every level
then runs at half the resolution, about 3x less CPU time per pixel for the
same width, with no output detail lost (each half-resolution position
predicts its four pixels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.models._common import ConfiguredNetwork, mirror_pad, zero_init

__all__ = ["UNet2D", "pad_to_multiple"]


def pad_to_multiple(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """Pad the last two dimensions at their ends up to multiples of ``multiple``.

    Reflection padding where the dimension is long enough, edge replication
    otherwise. Crop the network output back with ``[..., :h, :w]``.

    Parameters
    ----------
    x : torch.Tensor, shape (N, C, H, W)
    multiple : int

    Returns
    -------
    torch.Tensor, shape (N, C, H', W') with H', W' the next multiples.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h == 0 and pad_w == 0:
        return x
    return mirror_pad(x, (0, pad_w, 0, pad_h))


def _double_conv(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1),
        nn.SiLU(),
    )


class _Up(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(in_channels, out_channels, 3, padding=1),
            nn.SiLU(),
        )
        self.conv = _double_conv(out_channels + skip_channels, out_channels)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))


class UNet2D(ConfiguredNetwork):
    """2D U-Net; input height and width must be multiples of ``2**depth``.

    ``config`` holds the constructor arguments (see ``ConfiguredNetwork``).

    Parameters
    ----------
    in_channels : int
        Channels of the input, shape (N, in_channels, H, W).
    out_channels : int
        Channels of the output, shape (N, out_channels, H, W).
    base_channels : int
        Feature channels at full resolution; doubled at each level down.
    depth : int
        Number of 2x down-samplings (0 gives a plain convolutional network).
    space_to_depth : int
        Pixels folded into channels each way before the first layer (1: none).

    Examples
    --------
    >>> import torch
    >>> net = UNet2D(1, 1, base_channels=4, depth=2)
    >>> net(torch.zeros(2, 1, 16, 24)).shape
    torch.Size([2, 1, 16, 24])
    >>> UNet2D(1, 1, base_channels=4, depth=2, space_to_depth=2).size_multiple
    8
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        base_channels: int = 24,
        depth: int = 3,
        space_to_depth: int = 1,
    ) -> None:
        super().__init__(
            {
                "in_channels": in_channels,
                "out_channels": out_channels,
                "base_channels": base_channels,
                "depth": depth,
                "space_to_depth": space_to_depth,
            }
        )
        self.check_positive(
            "channel counts", "in_channels", "out_channels", "base_channels", "space_to_depth"
        )
        self.check_non_negative("depth", "depth")
        fold = space_to_depth**2
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.inc = _double_conv(in_channels * fold, widths[0])
        self.downs = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(2), _double_conv(widths[i], widths[i + 1]))
            for i in range(depth)
        )
        self.ups = nn.ModuleList(
            _Up(widths[i + 1], widths[i], widths[i]) for i in reversed(range(depth))
        )
        self.head = zero_init(nn.Conv2d(widths[0], out_channels * fold, 1))

    @property
    def size_multiple(self) -> int:
        """Height and width of the input must be multiples of this."""
        return self.config["space_to_depth"] * 2 ** self.config["depth"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_size_multiple(x)
        fold = self.config["space_to_depth"]
        if fold > 1:
            x = F.pixel_unshuffle(x, fold)
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        y = self.head(y)
        return F.pixel_shuffle(y, fold) if fold > 1 else y
