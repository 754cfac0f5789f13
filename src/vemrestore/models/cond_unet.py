"""A conditional 2D U-Net for diffusion: noisy sample + conditioning images + timestep.

The network sees the noisy sample ``x_t`` and the conditioning images
concatenated as channels, and the diffusion timestep through a sinusoidal
embedding (Vaswani et al. 2017; Ho et al. 2020) passed through a small MLP
that scales and shifts the features of every residual block (FiLM).

Like ``UNet2D`` it has no normalisation layers: GroupNorm statistics depend
on the image extent, so a plane restored whole and the same plane restored in
overlapping blocks would differ. Instead the second convolution of each
residual block and the output layer start at zero, so the untrained network
is an identity-plus-zero map and trains stably without normalisation.

References
----------
Ho, J., Jain, A. & Abbeel, P. Denoising diffusion probabilistic models.
NeurIPS (2020). :doi:`10.48550/arXiv.2006.11239`
Perez, E. et al. FiLM: visual reasoning with a general conditioning layer.
AAAI (2018). :doi:`10.1609/aaai.v32i1.11671`
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.models._common import ConfiguredNetwork, apply_film, embedding_mlp, zero_init

__all__ = ["ConditionalUNet2D", "timestep_embedding"]


def timestep_embedding(
    timesteps: torch.Tensor, dim: int, *, max_period: float = 10_000.0
) -> torch.Tensor:
    """Sinusoidal embedding of diffusion timesteps.

    Parameters
    ----------
    timesteps : torch.Tensor, shape (N,)
        Integer or fractional timesteps.
    dim : int
        Embedding size (even).
    max_period : float
        Longest period of the sinusoids, in timesteps.

    Returns
    -------
    torch.Tensor of float32, shape (N, dim)
        ``[cos(t w_0), ..., cos(t w_{d/2-1}), sin(t w_0), ...]`` with
        ``w_i = max_period ** (-i / (d/2))``.

    Examples
    --------
    >>> timestep_embedding(torch.tensor([0, 10]), 4).shape
    torch.Size([2, 4])
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be an even number >= 2, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period)
        * torch.arange(half, dtype=torch.float32, device=timesteps.device)
        / half
    )
    angles = timesteps.float().reshape(-1, 1) * freqs.reshape(1, -1)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1)


class _ResBlock(nn.Module):
    """Two 3x3 convolutions with SiLU, FiLM by the time embedding, and a skip."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.film = nn.Linear(time_channels, 2 * out_channels)
        self.conv2 = zero_init(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = apply_film(F.silu(self.conv1(x)), self.film(temb))
        return self.skip(x) + self.conv2(F.silu(h))


class ConditionalUNet2D(ConfiguredNetwork):
    """U-Net predicting a diffusion target from ``x_t``, the timestep and conditioning images.

    Input height and width must be multiples of ``2**depth`` (see
    ``vemrestore.models.pad_to_multiple``). ``config`` holds the constructor
    arguments (see ``ConfiguredNetwork``).

    Parameters
    ----------
    in_channels : int
        Channels of the noisy sample ``x_t``, shape (N, in_channels, H, W).
    cond_channels : int
        Channels of the conditioning images, shape (N, cond_channels, H, W);
        0 for an unconditional model.
    out_channels : int
        Channels of the output (noise, ``x0`` or velocity), shape (N, out_channels, H, W).
    base_channels : int
        Feature channels at full resolution; doubled at each level down.
    depth : int
        Number of 2x down-samplings.
    time_channels : int, optional
        Width of the time embedding MLP; default ``4 * base_channels``.

    Examples
    --------
    >>> net = ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2)
    >>> x, cond = torch.zeros(3, 1, 16, 24), torch.zeros(3, 2, 16, 24)
    >>> net(x, torch.tensor([0, 5, 999]), cond).shape
    torch.Size([3, 1, 16, 24])
    """

    def __init__(
        self,
        in_channels: int = 1,
        cond_channels: int = 2,
        out_channels: int = 1,
        base_channels: int = 32,
        depth: int = 3,
        time_channels: int | None = None,
    ) -> None:
        time_channels = 4 * base_channels if time_channels is None else time_channels
        super().__init__(
            {
                "in_channels": in_channels,
                "cond_channels": cond_channels,
                "out_channels": out_channels,
                "base_channels": base_channels,
                "depth": depth,
                "time_channels": time_channels,
            }
        )
        self.check_positive(
            "channel counts", "in_channels", "out_channels", "base_channels", "time_channels"
        )
        self.check_non_negative("cond_channels and depth", "cond_channels", "depth")
        self._embed_dim = 2 * math.ceil(base_channels / 2)
        self.time_mlp = embedding_mlp(self._embed_dim, time_channels)
        widths = [base_channels * 2**level for level in range(depth + 1)]
        self.inc = nn.Conv2d(in_channels + cond_channels, widths[0], 3, padding=1)
        self.enc = nn.ModuleList(
            _ResBlock(widths[max(level - 1, 0)], widths[level], time_channels)
            for level in range(depth + 1)
        )
        self.ups = nn.ModuleList(
            nn.Conv2d(widths[level + 1], widths[level], 3, padding=1)
            for level in reversed(range(depth))
        )
        self.dec = nn.ModuleList(
            _ResBlock(2 * widths[level], widths[level], time_channels)
            for level in reversed(range(depth))
        )
        self.head = zero_init(nn.Conv2d(widths[0], out_channels, 1))

    @property
    def size_multiple(self) -> int:
        """Height and width of the input must be multiples of this."""
        return 2 ** self.config["depth"]

    def forward(
        self, x: torch.Tensor, timesteps: torch.Tensor, cond: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Network output for noisy samples ``x`` at ``timesteps`` given ``cond``.

        Parameters
        ----------
        x : torch.Tensor, shape (N, in_channels, H, W)
        timesteps : torch.Tensor, shape (N,) or scalar
        cond : torch.Tensor, shape (N, cond_channels, H, W), optional
            Required when ``cond_channels > 0``.

        Returns
        -------
        torch.Tensor, shape (N, out_channels, H, W)
        """
        self.check_size_multiple(x)
        expected = self.config["cond_channels"]
        got = 0 if cond is None else cond.shape[1]
        if got != expected:
            raise ValueError(f"expected {expected} conditioning channels, got {got}")
        if cond is not None:
            x = torch.cat([x, cond.to(x.dtype)], dim=1)
        timesteps = torch.as_tensor(timesteps, device=x.device).reshape(-1)
        if timesteps.numel() == 1:
            timesteps = timesteps.expand(x.shape[0])
        temb = self.time_mlp(timestep_embedding(timesteps, self._embed_dim).to(x.dtype))
        h = self.inc(x)
        skips = []
        for level, block in enumerate(self.enc):
            if level > 0:
                h = F.max_pool2d(h, 2)
            h = block(h, temb)
            skips.append(h)
        skips.pop()
        for up, block in zip(self.ups, self.dec, strict=True):
            h = F.interpolate(h, scale_factor=2.0, mode="bilinear", align_corners=False)
            h = block(torch.cat([F.silu(up(h)), skips.pop()], dim=1), temb)
        return self.head(h)
