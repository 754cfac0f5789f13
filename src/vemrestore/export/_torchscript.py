"""What ``vemrestore predict`` does to one tile, as torch modules TorchScript can compile.

``SkeletonTile`` and ``LateralTile`` take a tile (B, 1, Z, Y, X) in the
input's intensity units and return the restored tile, doing everything the
method's ``predict_block`` does for a block that is the whole tile:
percentile normalisation, (skeleton) cubic-spline upsampling along z, the
network on every XZ and YZ plane or every XY slice, fusion and the inverse
normalisation. Built from their keyword arguments, they are the
architecture of a bioimage.io ``pytorch_state_dict`` entry (their state dict
is the method's network under ``net.``); ``to_torchscript`` turns one into
a standalone TorchScript module: the network is traced (its operations do
not depend on the input size once the input is padded to the network's
multiple, which the scripted wrapper does) and the wrapper is scripted, so
any tile size runs.

The cubic spline here is the matrix form of ``upsample_axial(kind="cubic")``
(not-a-knot spline through the section centres, edge values held past the
first and last centre; linear for fewer than 4 sections) in float64, since
TorchScript cannot call SciPy; ``tests/export`` checks the two agree.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.methods.skeleton import factor_code
from vemrestore.models.edge_attention import EdgeAttentionSRNet
from vemrestore.models.unet2d import UNet2D, pad_to_multiple
from vemrestore.normalize import PercentileNormalization

__all__ = ["LateralTile", "SkeletonTile", "axial_upsampling_matrix", "to_torchscript"]


def axial_upsampling_matrix(num_sections: int, scale_factor: float) -> torch.Tensor:
    """Weights (F, M) taking ``M`` sections to the ``F = round(M k)`` fine slices.

    ``W @ sections`` equals ``upsample_axial(sections, k, kind="cubic")``:
    fine slice ``j`` sits at section coordinate ``(j + 0.5) / k - 0.5``
    (``AxialGrid.to_section``), clipped to the first and last centre; the
    not-a-knot cubic spline for 4 or more sections, linear for fewer.

    Parameters
    ----------
    num_sections : int
        ``M`` >= 1.
    scale_factor : float
        ``k`` > 1.

    Returns
    -------
    torch.Tensor of float64, shape (F, M)
    """
    m = num_sections
    num_fine = int(torch.round(torch.tensor(m * scale_factor, dtype=torch.float64)).item())
    fine = torch.arange(num_fine, dtype=torch.float64)
    u = torch.clamp((fine + 0.5) / scale_factor - 0.5, 0.0, float(m - 1))
    lo = torch.clamp(torch.floor(u), 0.0, float(max(m - 2, 0))).long()
    hi = torch.clamp(lo + 1, 0, m - 1)
    t = u - lo.double()
    rows = torch.arange(num_fine)
    weights = torch.zeros(num_fine, m, dtype=torch.float64)
    weights[rows, lo] = 1.0 - t
    weights[rows, hi] += t
    if m < 4:
        return weights
    # Second derivatives at the knots M = Q y: interior rows M[i-1] + 4 M[i] + M[i+1]
    # = 6 (y[i-1] - 2 y[i] + y[i+1]); not-a-knot ends: third derivative continuous
    # at the second and the second-to-last knot.
    system = torch.zeros(m, m, dtype=torch.float64)
    second = torch.zeros(m, m, dtype=torch.float64)
    inner = torch.arange(1, m - 1)
    system[inner, inner - 1] = 1.0
    system[inner, inner] = 4.0
    system[inner, inner + 1] = 1.0
    second[inner, inner - 1] = 6.0
    second[inner, inner] = -12.0
    second[inner, inner + 1] = 6.0
    ends = torch.tensor([1.0, -2.0, 1.0], dtype=torch.float64)
    system[0, :3] = ends
    system[m - 1, m - 3 :] = ends
    moments = torch.linalg.solve(system, second)
    s = 1.0 - t
    a = (s * s * s - s) / 6.0
    b = (t * t * t - t) / 6.0
    return weights + a[:, None] * moments[lo] + b[:, None] * moments[hi]


def _scales(norm: PercentileNormalization) -> tuple[float, float, float]:
    """``low``, ``1 / (high - low)`` and ``high - low`` rounded as ``apply``/``invert`` use them."""
    return (
        float(np.float32(norm.low)),
        float(np.float32(1.0 / (norm.high - norm.low))),
        float(np.float32(norm.high - norm.low)),
    )


class SkeletonTile(nn.Module):
    """The skeleton method's prediction of a whole tile of thick sections.

    Parameters
    ----------
    network : dict
        ``UNet2D`` arguments (``in_channels``, ``out_channels``,
        ``base_channels``, ``depth``).
    scale_factor : float
        Axial factor ``k``: a tile of ``Z`` sections gives ``round(Z k)`` slices.
    context_planes : int
        ``SkeletonConfig.context_planes``.
    factor_input : bool
        ``SkeletonConfig.factor_input``: the network takes a constant factor channel.
    fusion : {"mean", "geometric"}
        How the XZ and YZ predictions are combined.
    low, high : float
        The percentile normalisation (``normalization.json``).
    batch_size : int
        Planes per network call (memory only; results do not depend on it).

    Examples
    --------
    >>> tile = SkeletonTile(network={"in_channels": 1, "out_channels": 1, "base_channels": 4,
    ...                              "depth": 1}, scale_factor=4, low=0.0, high=255.0)
    >>> tile(torch.zeros(1, 1, 5, 8, 6)).shape
    torch.Size([1, 1, 20, 8, 6])
    """

    def __init__(
        self,
        *,
        network: dict[str, int],
        scale_factor: float,
        context_planes: int = 0,
        factor_input: bool = False,
        fusion: str = "mean",
        low: float,
        high: float,
        batch_size: int = 8,
    ) -> None:
        super().__init__()
        if fusion not in ("mean", "geometric"):
            raise ValueError(f"fusion must be 'mean' or 'geometric', got {fusion!r}")
        self.net = UNet2D(**network)
        self.scale_factor = float(scale_factor)
        self.context_planes = int(context_planes)
        self.spacing = max(1, round(scale_factor))
        self.multiple = int(self.net.size_multiple)
        self.factor_input = bool(factor_input)
        self.factor = float(factor_code(scale_factor))
        self.geometric = fusion == "geometric"
        self.low, self.gain, self.span = _scales(PercentileNormalization(low, high))
        self.batch_size = int(batch_size)

    def example_input(self) -> torch.Tensor:
        """An input of a size the network is traced at (planes a multiple of its pooling)."""
        channels = 2 * self.context_planes + 1 + int(self.factor_input)
        return torch.zeros(2, channels, 4 * self.multiple, 5 * self.multiple)

    def _with_factor(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` with the factor channel appended when the network takes one."""
        if not self.factor_input:
            return x
        return torch.cat([x, torch.full_like(x[:, :1], self.factor)], dim=1)

    def _planes(self, stack: torch.Tensor) -> torch.Tensor:
        """Restore every plane of ``stack`` (P, H, W): ``Skeleton.predict_planes``."""
        n = self.context_planes
        count, height, width = stack.shape[0], stack.shape[1], stack.shape[2]
        offsets = torch.arange(-n, n + 1, device=stack.device) * self.spacing
        ids = torch.arange(count, device=stack.device)
        chosen = torch.clamp(ids[:, None] + offsets[None, :], 0, count - 1)
        out = torch.empty_like(stack)
        for start in range(0, count, self.batch_size):
            x = stack[chosen[start : start + self.batch_size]]
            residual = self.net(pad_to_multiple(self._with_factor(x), self.multiple))
            out[start : start + self.batch_size] = x[:, n] + residual[:, 0, :height, :width]
        return out

    def _restore(self, sections: torch.Tensor) -> torch.Tensor:
        """One tile (Z, Y, X) -> (round(Z k), Y, X), as ``Skeleton.predict_block``."""
        normalised = (sections - self.low) * self.gain
        weights = axial_upsampling_matrix(sections.shape[0], self.scale_factor)
        fine = torch.einsum(
            "fm,myx->fyx", weights.to(sections.device), normalised.to(torch.float64)
        ).to(torch.float32)
        xz = self._planes(fine.permute(1, 0, 2).contiguous()).permute(1, 0, 2)
        yz = self._planes(fine.permute(2, 0, 1).contiguous()).permute(1, 2, 0)
        if self.geometric:
            a = torch.clamp(xz * self.span + self.low, min=0.0)
            b = torch.clamp(yz * self.span + self.low, min=0.0)
            return torch.sqrt(a * b)
        return 0.5 * (xz + yz) * self.span + self.low

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a tile (B, 1, Z, Y, X) of sections to (B, 1, round(Z k), Y, X)."""
        restored = [self._restore(x[i, 0]) for i in range(x.shape[0])]
        return torch.stack(restored).unsqueeze(1)


class LateralTile(nn.Module):
    """The lateral method's prediction of a whole tile of XY slices.

    Parameters
    ----------
    network : dict
        ``EdgeAttentionSRNet`` arguments (``scale_factor``, ``channels``, ...).
    input_low, input_high, output_low, output_high : float
        The input and output percentile normalisations (``normalization.json``).
    batch_size : int
        Slices per network call (memory only).

    Examples
    --------
    >>> tile = LateralTile(network={"scale_factor": 2, "channels": 8, "num_heads": 2},
    ...                    input_low=0.0, input_high=255.0, output_low=0.0, output_high=255.0)
    >>> tile(torch.zeros(1, 1, 2, 12, 10)).shape
    torch.Size([1, 1, 2, 24, 20])
    """

    def __init__(
        self,
        *,
        network: dict[str, Any],
        input_low: float,
        input_high: float,
        output_low: float,
        output_high: float,
        batch_size: int = 4,
    ) -> None:
        super().__init__()
        self.net = EdgeAttentionSRNet(**network)
        self.factor = int(network["scale_factor"])
        self.multiple = int(self.net.size_multiple)
        self.in_low, self.in_gain, _ = _scales(PercentileNormalization(input_low, input_high))
        self.out_low, _, self.out_span = _scales(PercentileNormalization(output_low, output_high))
        self.batch_size = int(batch_size)

    def example_input(self) -> torch.Tensor:
        """An input of a size the network is traced at (a multiple of its window)."""
        side = self.multiple * max(2, math.ceil(17 / self.multiple))
        return torch.zeros(2, 1, side, side + self.multiple)

    def _base(self, x: torch.Tensor) -> torch.Tensor:
        """The network's skip: bilinear upsampling (identity at factor 1)."""
        if self.factor == 1:
            return x
        return F.interpolate(
            x, scale_factor=float(self.factor), mode="bilinear", align_corners=False
        )

    def _slices(self, planes: torch.Tensor) -> torch.Tensor:
        """Restore normalised slices (N, 1, H, W) -> (N, 1, f H, f W), as the network does.

        The input is padded to the window multiple here (as the network pads
        it), and the network's skip is recomputed from the unpadded slices,
        so the result equals ``net(planes)`` for any H, W.
        """
        height, width = planes.shape[2], planes.shape[3]
        f = self.factor
        padded = pad_to_multiple(planes, self.multiple)
        residual = self.net(padded) - self._base(padded)
        return residual[:, :, : f * height, : f * width] + self._base(planes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore a tile (B, 1, Z, Y, X) of LR slices to (B, 1, Z, f Y, f X)."""
        b, z, height, width = x.shape[0], x.shape[2], x.shape[3], x.shape[4]
        f = self.factor
        planes = (x.reshape(b * z, 1, height, width) - self.in_low) * self.in_gain
        chunks = [
            self._slices(planes[start : start + self.batch_size])
            for start in range(0, b * z, self.batch_size)
        ]
        restored = torch.cat(chunks) * self.out_span + self.out_low
        return restored.reshape(b, 1, z, f * height, f * width)


def to_torchscript(tile: SkeletonTile | LateralTile) -> torch.jit.ScriptModule:
    """A standalone TorchScript module computing what ``tile`` computes.

    The network is traced at ``tile.example_input()`` (size checks only
    warn while tracing; the wrapper always feeds it padded planes) and the
    wrapper scripted, so the module takes any tile size.
    """
    scripted = copy.deepcopy(tile).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # torch 2.13 deprecates TorchScript; bioimage.io 0.5 has no torch.export format.
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        scripted.net = torch.jit.trace(scripted.net, tile.example_input())
        return torch.jit.script(scripted)
