"""A small edge-attention network for lateral super-resolution and denoising.

The network maps a low-resolution image (N, 1, h, w) to (N, 1, f h, f w):

1. a shallow 3x3 convolution extracts features;
2. an edge-attention branch turns the detail bands of an à-trous wavelet
   transform of the input (B3 spline, ``num_wavelet_levels`` levels) into a
   sigmoid gate that scales the shallow features: ``features * (1 + gate)``;
3. the body runs windowed self-attention blocks (Swin style, every second
   block shifted by half a window, relative position bias) for long-range
   context, then convolutional residual blocks, with a long skip;
4. pixel shuffle upsamples by ``scale_factor`` (2, 3 or 4; 1 denoises only)
   and a 3x3 convolution makes one channel, added to the bilinear upsampled
   input (``align_corners=False``: pixel centres match pixel binning).

No normalisation over space or batch (LayerNorm acts per pixel), windows are
anchored at the image origin and every operation has a bounded reach
(``context``), so a plane predicted in overlapping blocks whose starts are
multiples of ``window_size`` equals the plane predicted whole. The output
convolution starts at zero: an untrained network returns the bilinear
upsampled input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.models._common import ConfiguredNetwork, check_divisible, zero_init
from vemrestore.models.unet2d import pad_to_multiple
from vemrestore.models.wavelet import atrous_decompose, atrous_halo

__all__ = ["EdgeAttentionSRNet", "EdgeGate", "ResidualBlock", "WindowTransformerBlock"]


_MASKED = -1e4


def _window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(N, H, W, C) -> (N, H/w * W/w, w*w, C)."""
    n, h, w, c = x.shape
    x = x.view(n, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, -1, window * window, c)


def _window_merge(windows: torch.Tensor, window: int, h: int, w: int) -> torch.Tensor:
    """Inverse of ``_window_partition``."""
    n, c = windows.shape[0], windows.shape[-1]
    x = windows.view(n, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(n, h, w, c)


def _shift_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """Additive mask (num_windows, 1, L, L) that keeps rolled-in pixels apart."""
    labels = torch.zeros(h, w, device=device)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for rows in cuts:
        for cols in cuts:
            labels[rows, cols] = region
            region += 1
    windows = _window_partition(labels.view(1, h, w, 1), window).squeeze(-1)[0]
    different = windows[:, :, None] != windows[:, None, :]
    # A large finite negative (not -inf) keeps softmax on its fast path; exp underflows to 0.
    mask = torch.zeros(different.shape, device=device)
    return mask.masked_fill(different, _MASKED).unsqueeze(1)


class WindowTransformerBlock(nn.Module):
    """Self-attention inside non-overlapping windows, then a per-pixel MLP.

    Parameters
    ----------
    channels : int
        Feature channels C (divisible by ``num_heads``).
    window_size : int
        Side of the square windows, in pixels.
    num_heads : int
        Attention heads.
    shift : bool
        Shift the windows by half their size (cyclic, masked) so that
        consecutive blocks exchange information across window borders.
    mlp_ratio : float
        Hidden width of the MLP relative to ``channels``.

    Notes
    -----
    Input and output are (N, H, W, C) with H and W multiples of ``window_size``.
    """

    def __init__(
        self,
        channels: int,
        *,
        window_size: int = 8,
        num_heads: int = 4,
        shift: bool = False,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        check_divisible(channels, num_heads)
        self.window_size = window_size
        self.num_heads = num_heads
        self.shift = window_size // 2 if shift else 0
        self.norm1 = nn.LayerNorm(channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        self.norm2 = nn.LayerNorm(channels)
        hidden = max(1, round(channels * mlp_ratio))
        self.mlp = nn.Sequential(
            nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels)
        )
        size = 2 * window_size - 1
        self.position_bias = nn.Parameter(torch.zeros(size * size, num_heads))
        nn.init.trunc_normal_(self.position_bias, std=0.02)
        coords = torch.stack(
            torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
        ).flatten(1)
        relative = (coords[:, :, None] - coords[:, None, :]) + (window_size - 1)
        self.register_buffer("bias_index", relative[0] * size + relative[1], persistent=False)

    def _attention(self, x: torch.Tensor) -> torch.Tensor:
        n, h, w, c = x.shape
        window = self.window_size
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        windows = _window_partition(x, window)  # (N, nW, L, C)
        num_windows, length = windows.shape[1], windows.shape[2]
        qkv = self.qkv(windows).view(n, num_windows, length, 3, self.num_heads, -1)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)  # each (N, nW, heads, L, d)
        bias = self.position_bias[self.bias_index].permute(2, 0, 1).to(q.dtype)  # (heads, L, L)
        if self.shift:
            bias = bias + _shift_mask(h, w, window, self.shift, x.device).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        out = out.permute(0, 1, 3, 2, 4).reshape(n, num_windows, length, c)
        x = _window_merge(self.proj(out), window, h, w)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self._attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ResidualBlock(nn.Module):
    """``x + conv(silu(conv(x)))`` with 3x3 convolutions; shape (N, C, H, W) kept."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class EdgeGate(nn.Module):
    """Gate (N, C, H, W) in (0, 1) computed from the à-trous detail bands of an image.

    Parameters
    ----------
    in_channels : int
        Image channels; the branch sees ``in_channels * num_levels`` bands.
    channels : int
        Channels of the gate (those of the features it scales).
    num_levels : int
        Wavelet levels (detail bands at scales 1, 2, 4, ... pixels).
    """

    def __init__(self, in_channels: int, channels: int, *, num_levels: int = 3) -> None:
        super().__init__()
        self.num_levels = num_levels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels * num_levels, channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.Sigmoid(),
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        details, _ = atrous_decompose(image, num_levels=self.num_levels)
        return self.body(torch.cat(details, dim=1))


class EdgeAttentionSRNet(ConfiguredNetwork):
    """Edge-gated windowed-transformer network for x1 (denoising) to x4 upsampling.

    ``config`` holds the constructor arguments (see ``ConfiguredNetwork``).

    Parameters
    ----------
    scale_factor : int
        Lateral upsampling factor: 1 (denoising only), 2, 3 or 4.
    channels : int
        Feature channels.
    num_transformer_blocks : int
        Windowed self-attention blocks (every second one shifted).
    num_residual_blocks : int
        Convolutional residual blocks after the transformer blocks.
    window_size : int
        Attention window side, in input pixels.
    num_heads : int
        Attention heads (must divide ``channels``).
    num_wavelet_levels : int
        Levels of the à-trous transform feeding the edge gate.
    mlp_ratio : float
        Hidden width of the transformer MLPs relative to ``channels``.

    Examples
    --------
    >>> import torch
    >>> net = EdgeAttentionSRNet(2, channels=8, num_heads=2)
    >>> net(torch.zeros(1, 1, 20, 12)).shape
    torch.Size([1, 1, 40, 24])
    """

    def __init__(
        self,
        scale_factor: int,
        *,
        channels: int = 32,
        num_transformer_blocks: int = 2,
        num_residual_blocks: int = 2,
        window_size: int = 8,
        num_heads: int = 4,
        num_wavelet_levels: int = 3,
        mlp_ratio: float = 2.0,
    ) -> None:
        if scale_factor not in (1, 2, 3, 4):
            raise ValueError(f"scale_factor must be 1, 2, 3 or 4, got {scale_factor}")
        super().__init__(
            {
                "scale_factor": scale_factor,
                "channels": channels,
                "num_transformer_blocks": num_transformer_blocks,
                "num_residual_blocks": num_residual_blocks,
                "window_size": window_size,
                "num_heads": num_heads,
                "num_wavelet_levels": num_wavelet_levels,
                "mlp_ratio": mlp_ratio,
            }
        )
        self.check_positive("sizes", "channels", "window_size", "num_heads", "num_wavelet_levels")
        self.check_non_negative("block counts", "num_transformer_blocks", "num_residual_blocks")
        self.shallow = nn.Conv2d(1, channels, 3, padding=1)
        self.edge_gate = EdgeGate(1, channels, num_levels=num_wavelet_levels)
        self.transformer = nn.ModuleList(
            WindowTransformerBlock(
                channels,
                window_size=window_size,
                num_heads=num_heads,
                shift=i % 2 == 1,
                mlp_ratio=mlp_ratio,
            )
            for i in range(num_transformer_blocks)
        )
        self.residual = nn.Sequential(
            *(ResidualBlock(channels) for _ in range(num_residual_blocks))
        )
        self.body_out = nn.Conv2d(channels, channels, 3, padding=1)
        if scale_factor > 1:
            self.upsample = nn.Sequential(
                nn.Conv2d(channels, channels * scale_factor**2, 3, padding=1),
                nn.PixelShuffle(scale_factor),
                nn.SiLU(),
            )
        else:
            self.upsample = nn.SiLU()
        self.head = zero_init(nn.Conv2d(channels, 1, 3, padding=1))

    @property
    def scale_factor(self) -> int:
        return self.config["scale_factor"]

    @property
    def size_multiple(self) -> int:
        """Windows are anchored at multiples of this (input pixels)."""
        return self.config["window_size"]

    @property
    def context(self) -> int:
        """Input pixels each side that can change an output pixel (the blockwise halo)."""
        cfg = self.config
        gate = atrous_halo(cfg["num_wavelet_levels"]) + 2
        reach = max(1, gate)
        reach += cfg["num_transformer_blocks"] * (cfg["window_size"] - 1)
        reach += 2 * cfg["num_residual_blocks"] + 1  # residual blocks, body_out
        reach += 1 if cfg["scale_factor"] > 1 else 0  # convolution before the shuffle
        return reach + 1  # head (<= 1 input pixel) and the bilinear skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore (N, 1, h, w) to (N, 1, f h, f w); any h, w (padded internally)."""
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"EdgeAttentionSRNet expects (N, 1, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        f = self.scale_factor
        padded = pad_to_multiple(x, self.size_multiple)
        features = self.shallow(padded)
        features = features * (1 + self.edge_gate(padded))
        deep = features.permute(0, 2, 3, 1)
        for block in self.transformer:
            deep = block(deep)
        deep = self.residual(deep.permute(0, 3, 1, 2).contiguous())
        features = features + self.body_out(deep)
        out = self.head(self.upsample(features))[..., : f * h, : f * w]
        if f == 1:
            return x + out
        base = F.interpolate(x, scale_factor=f, mode="bilinear", align_corners=False)
        return base + out
