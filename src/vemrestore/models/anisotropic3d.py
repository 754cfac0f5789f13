"""A conditional diffusion network with anisotropic 3D convolutions for serial sections.

The input is a short stack of sections (N, C, D, H, W): ``num_context``
given sections above a gap of ``D - 2 * num_context`` sections to restore,
then ``num_context`` given sections below. Building blocks:

- ``AnisotropicConv3d``: parallel in-plane (1x3x3), across-section (3x1x1)
  and symmetric (3x3x3) kernels with separate parameters, summed. The three
  kernels are merged into one 3x3x3 kernel before the convolution, which
  computes exactly the sum of the three branches at the cost of one
  (structural re-parameterisation as in ACNet, Ding et al. 2019).
- ``BoundaryAttention``: every pixel of every gap section attends to the
  same pixel of the first and the last given section (the nearest above and
  below): a softmax over the two weighs how much each contributes.
- ``AnisotropicDenoiser3D``: a small U-Net (in-plane down-sampling only, as
  the stack is thin) conditioned on the diffusion timestep, with several
  output heads at different decoder resolutions whose predictions are
  combined with timestep-dependent weights into one joint estimate.

No normalisation layers (their statistics would depend on the block extent).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.models import cond_unet
from vemrestore.models._common import (
    ConfiguredNetwork,
    apply_film,
    check_divisible,
    embedding_mlp,
    zero_init,
)

__all__ = ["AnisotropicConv3d", "AnisotropicDenoiser3D", "BoundaryAttention", "DenoiserOutput"]

# Sinusoidal features of the timestep fed to the embedding MLP.
_TIME_FEATURES = 32


class AnisotropicConv3d(nn.Module):
    """Sum of a 1x3x3, a 3x1x1 and a 3x3x3 convolution ("same" padding).

    Parameters
    ----------
    in_channels, out_channels : int

    Notes
    -----
    The kernels are separate parameters (each branch learns at its own
    pace); the forward pass adds them into one 3x3x3 kernel, which equals
    running the three branches and summing.

    References
    ----------
    Ding, X., Guo, Y., Ding, G. & Han, J. ACNet: strengthening the kernel
    skeletons for powerful CNN via asymmetric convolution blocks. ICCV (2019).
    :doi:`10.1109/ICCV.2019.00200`
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.inplane = nn.Parameter(torch.empty(out_channels, in_channels, 1, 3, 3))
        self.axial = nn.Parameter(torch.empty(out_channels, in_channels, 3, 1, 1))
        self.full = nn.Parameter(torch.empty(out_channels, in_channels, 3, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        for weight, fan_in in ((self.inplane, 9), (self.axial, 3), (self.full, 27)):
            # Each branch starts with a third of the variance of a plain 3x3x3 convolution.
            nn.init.normal_(weight, std=math.sqrt(2.0 / (3 * fan_in * in_channels)))

    def merged_weight(self) -> torch.Tensor:
        """The single 3x3x3 kernel equal to the three branches together."""
        weight = self.full.clone()
        weight[:, :, 1:2, :, :] += self.inplane
        weight[:, :, :, 1:2, 1:2] += self.axial
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv3d(x, self.merged_weight(), self.bias, padding=1)


class BoundaryAttention(nn.Module):
    """Per-pixel attention of the gap sections to the two sections bounding the gap.

    Parameters
    ----------
    channels : int
        Feature channels (a multiple of ``num_heads``).
    num_heads : int
        Independent attention heads, each over ``channels / num_heads`` channels.

    Notes
    -----
    For features ``h`` of shape (N, C, D, H, W) and ``c`` context sections on
    each side, the queries are the gap sections ``h[:, :, c:D-c]`` and the two
    keys/values the first and last given sections ``h[:, :, c-1]`` and
    ``h[:, :, D-c]``. The output projection starts at zero, so an untrained
    block is the identity. ``last_weights`` keeps the weights of the section
    above, shape (N, heads, gap, H, W), from the latest call.
    """

    def __init__(self, channels: int, *, num_heads: int = 4) -> None:
        super().__init__()
        check_divisible(channels, num_heads)
        self.num_heads = num_heads
        self.query = nn.Conv3d(channels, channels, 1)
        self.key = nn.Conv3d(channels, channels, 1)
        self.value = nn.Conv3d(channels, channels, 1)
        self.out = zero_init(nn.Conv3d(channels, channels, 1))
        self.last_weights: torch.Tensor | None = None

    def forward(self, h: torch.Tensor, num_context: int) -> torch.Tensor:
        n, channels, depth, height, width = h.shape
        gap = depth - 2 * num_context
        if num_context < 1 or gap < 1:
            raise ValueError(
                f"a stack of depth {depth} with num_context={num_context} has no gap and context"
            )
        bounds = h[:, :, [num_context - 1, depth - num_context]]  # (N, C, 2, H, W)
        heads, per_head = self.num_heads, channels // self.num_heads
        q = self.query(h[:, :, num_context : depth - num_context])
        q = q.reshape(n, heads, per_head, gap, height, width)
        k = self.key(bounds).reshape(n, heads, per_head, 2, 1, height, width)
        v = self.value(bounds).reshape(n, heads, per_head, 2, 1, height, width)
        logits = (q.unsqueeze(3) * k).sum(dim=2) / math.sqrt(per_head)  # (N, heads, 2, gap, H, W)
        weights = logits.softmax(dim=2)
        self.last_weights = weights[:, :, 0].detach()
        mixed = (weights.unsqueeze(2) * v).sum(dim=3)  # (N, heads, per_head, gap, H, W)
        update = self.out(mixed.reshape(n, channels, gap, height, width))
        pad = (0, 0, 0, 0, num_context, num_context)
        return h + F.pad(update, pad)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding (N,) -> (N, dim) of integer timesteps (Vaswani et al. 2017).

    ``cond_unet.timestep_embedding`` with the sines first (the order this network was
    trained with).
    """
    return cond_unet.timestep_embedding(timesteps, dim).roll(dim // 2, dims=1)


class _ResBlock(nn.Module):
    """Two anisotropic convolutions with a timestep scale/shift and a residual path."""

    def __init__(self, in_channels: int, out_channels: int, embed_dim: int) -> None:
        super().__init__()
        self.conv1 = AnisotropicConv3d(in_channels, out_channels)
        self.film = nn.Linear(embed_dim, 2 * out_channels)
        self.conv2 = AnisotropicConv3d(out_channels, out_channels)
        nn.init.zeros_(self.conv2.bias)
        with torch.no_grad():
            for w in (self.conv2.inplane, self.conv2.axial, self.conv2.full):
                w.mul_(0.1)
        self.skip = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv3d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(x))
        h = apply_film(h, self.film(emb))
        return self.skip(x) + self.conv2(F.silu(h))


class DenoiserOutput(tuple):
    """``(joint, heads)``: the combined estimate (N, 1, D, H, W) and each head's (N, K, D, H, W)."""

    __slots__ = ()

    def __new__(cls, joint: torch.Tensor, heads: torch.Tensor) -> DenoiserOutput:
        return super().__new__(cls, (joint, heads))

    @property
    def joint(self) -> torch.Tensor:
        return self[0]

    @property
    def heads(self) -> torch.Tensor:
        return self[1]


class AnisotropicDenoiser3D(ConfiguredNetwork):
    """Conditional denoiser for a gap between given sections (a small anisotropic 3D U-Net).

    Parameters
    ----------
    in_channels : int
        Input channels, e.g. the noisy sample, the known values, the mask of
        pixels to restore and a position channel.
    num_context : int
        Given sections on each side of the gap in every input stack.
    base_channels : int
        Channels after the stem; level ``l`` has ``base_channels * 2**min(l, 2)``.
    depth : int
        In-plane 2x down-samplings after the stem.
    patch_size : int
        The stem turns each ``patch_size`` x ``patch_size`` patch of a section
        into one feature vector, and the heads turn it back (pixel shuffle):
        the network runs at ``1 / patch_size`` resolution, ``patch_size**2``
        times cheaper. H and W must be multiples of ``patch_size * 2**depth``.
    num_heads : int
        Output heads; head ``k`` reads the decoder at level ``min(k, depth)``
        (0 = the stem's resolution) and is upsampled to the input resolution.
    attention_heads : int
        Heads of each ``BoundaryAttention`` block (at the bottleneck and at
        the stem's resolution).

    Notes
    -----
    ``forward(x, timesteps)`` returns a ``DenoiserOutput``: the joint
    estimate is ``sum_k w_k(t) head_k`` with weights from a softmax over a
    linear map of the timestep embedding (uniform at initialisation). The
    output layers start at zero. ``config`` holds the constructor arguments
    (see ``ConfiguredNetwork``).

    Examples
    --------
    >>> net = AnisotropicDenoiser3D(4, num_context=1, base_channels=8, depth=1)
    >>> out = net(torch.zeros(2, 4, 3, 16, 16), torch.tensor([10, 900]))
    >>> tuple(out.joint.shape), tuple(out.heads.shape)
    ((2, 1, 3, 16, 16), (2, 3, 3, 16, 16))
    """

    def __init__(
        self,
        in_channels: int,
        *,
        num_context: int = 1,
        base_channels: int = 32,
        depth: int = 2,
        patch_size: int = 2,
        num_heads: int = 3,
        attention_heads: int = 4,
    ) -> None:
        super().__init__(
            {
                "in_channels": in_channels,
                "num_context": num_context,
                "base_channels": base_channels,
                "depth": depth,
                "patch_size": patch_size,
                "num_heads": num_heads,
                "attention_heads": attention_heads,
            }
        )
        self.check_positive("sizes", "num_context", "patch_size", "num_heads", "base_channels")
        self.check_non_negative("depth", "depth")
        self.num_context = num_context
        self.depth = depth
        self.patch_size = patch_size
        self.size_multiple = patch_size * 2**depth
        widths = [base_channels * 2 ** min(level, 2) for level in range(depth + 1)]
        embed_dim = 4 * base_channels
        self.time_mlp = embedding_mlp(_TIME_FEATURES, embed_dim)
        # Patchify: each p x p pixel patch of each section becomes one feature vector.
        self.stem = nn.Conv3d(
            in_channels, widths[0], (1, patch_size, patch_size), (1, patch_size, patch_size)
        )
        self.stem_block = _ResBlock(widths[0], widths[0], embed_dim)
        self.down_blocks = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for level in range(depth):
            self.down_blocks.append(_ResBlock(widths[level], widths[level], embed_dim))
            self.downsample.append(
                nn.Conv3d(widths[level], widths[level + 1], (1, 2, 2), (1, 2, 2))
            )
        self.mid1 = _ResBlock(widths[depth], widths[depth], embed_dim)
        self.mid_attention = BoundaryAttention(widths[depth], num_heads=attention_heads)
        self.mid2 = _ResBlock(widths[depth], widths[depth], embed_dim)
        self.upsample = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(depth)):
            self.upsample.append(
                nn.Conv3d(widths[level + 1], widths[level], (1, 3, 3), padding=(0, 1, 1))
            )
            self.up_blocks.append(_ResBlock(2 * widths[level], widths[level], embed_dim))
        self.out_attention = BoundaryAttention(widths[0], num_heads=attention_heads)
        self.head_levels = [min(k, depth) for k in range(num_heads)]
        # Each head predicts a p x p patch per feature vector (unpatchified by pixel shuffle).
        self.heads = nn.ModuleList(
            zero_init(nn.Conv3d(widths[level], patch_size**2, (1, 3, 3), padding=(0, 1, 1)))
            for level in self.head_levels
        )
        self.head_weights = zero_init(nn.Linear(embed_dim, num_heads))

    def _unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """(N, p*p, D, h, w) -> (N, 1, D, h*p, w*p)."""
        n, _, depth, height, width = x.shape
        p = self.patch_size
        x = x.reshape(n, p, p, depth, height, width).permute(0, 3, 4, 1, 5, 2)
        return x.reshape(n, 1, depth, height * p, width * p)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor) -> DenoiserOutput:
        """Predict for a stack ``x`` (N, C, D, H, W) at integer ``timesteps`` (N,)."""
        n, _, depth, height, width = x.shape
        self.check_size_multiple(x)
        if depth < 2 * self.num_context + 1:
            raise ValueError(
                f"stack depth {depth} is too small for num_context={self.num_context} and a gap"
            )
        emb = self.time_mlp(timestep_embedding(timesteps.reshape(n), _TIME_FEATURES))
        h = self.stem_block(self.stem(x), emb)
        skips = []
        for block, down in zip(self.down_blocks, self.downsample, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.mid1(h, emb)
        h = self.mid_attention(h, self.num_context)
        h = self.mid2(h, emb)
        levels = {self.depth: h}
        for up, block in zip(self.upsample, self.up_blocks, strict=True):
            h = up(F.interpolate(h, scale_factor=(1, 2, 2), mode="nearest"))
            h = block(torch.cat([h, skips.pop()], dim=1), emb)
            levels[len(skips)] = h
        levels[0] = self.out_attention(levels[0], self.num_context)
        outputs = []
        for head, level in zip(self.heads, self.head_levels, strict=True):
            out = self._unpatchify(head(F.silu(levels[level])))
            if level:
                out = F.interpolate(out, size=(depth, height, width), mode="trilinear")
            outputs.append(out)
        heads = torch.cat(outputs, dim=1)
        weights = self.head_weights(emb).softmax(dim=1)[:, :, None, None, None]
        joint = (heads * weights).sum(dim=1, keepdim=True)
        return DenoiserOutput(joint, heads)
