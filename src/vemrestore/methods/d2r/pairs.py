"""Training pairs and loss of D2R's stage III (the 3D network).

A source is a fine volume with one axis to degrade: the XZ-recovered volume
along y, the YZ-recovered volume along x (their untouched fine in-plane
axis), or, for the supervised reference, an isotropic volume along z. A
pair is a window of whole sections along that axis, moved to the front:
the fine window is the target, its sections (``AxialSectioning``, the
forward model of the real acquisition) and their cubic upsample the input.
An observed source holds the real sections themselves: it has no target,
only the data-consistency term (the prediction, re-sectioned, must give
the observed sections back).

The network takes one packed input (``PackedNet3D``): the sections repeated
onto the fine grid, and the cubic upsample, as two channels. The targets are
packed too: the fine target, a weight (0 where there is none) and the
repeated sections.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.methods._trained import ArraySampler
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.models.d2r3d import D2RNet3D
from vemrestore.models.wavelet import atrous_decompose
from vemrestore.normalize import PercentileNormalization

__all__ = ["PAIR_MARGIN", "PackedNet3D", "PairSource", "StageThreePairs", "stage_three_loss"]

# Sections each side of a training window that give context but are left out of the loss.
PAIR_MARGIN = 1


@dataclass(frozen=True)
class PairSource:
    """A fine volume (any array sliceable like NumPy) and the axis its pairs degrade.

    ``rows`` limits the windows along ``axis`` to ``[start, stop)`` (training
    and validation parts of the same volume). ``observed``: ``data`` are the
    real sections (``axis`` 0), in section units, with no fine target.
    """

    data: Any
    axis: int
    normalization: PercentileNormalization
    rows: tuple[int, int]
    observed: bool = False


class PackedNet3D(nn.Module):
    """``D2RNet3D`` for the training loop: input (N, 2, F, H, W) = [repeated sections, cubic]."""

    def __init__(self, net: D2RNet3D) -> None:
        super().__init__()
        self.net = net

    def forward(self, packed: torch.Tensor) -> torch.Tensor:
        sections = packed[:, :1, :: self.net.factor]
        return self.net(sections, packed[:, 1:2])


@dataclass(eq=False)
class StageThreePairs(ArraySampler):
    """Draw packed inputs (N, 2, F, P, P) and targets (N, 3, F, P, P) from the sources.

    Each pair is ``num_sections + 2 * margin`` sections long along the
    degraded axis (``F`` fine slices); the ``margin`` sections each side give
    the cubic spline and the network context and are left out of the loss.
    The two other axes are rotated and flipped at random.
    """

    sources: Sequence[PairSource]
    _: KW_ONLY
    factor: int
    profile: str
    num_sections: int
    patch_size: int
    margin: int = PAIR_MARGIN

    def __post_init__(self) -> None:
        self.window = (self.num_sections + 2 * self.margin) * self.factor
        self.sectioning = AxialSectioning(self.factor, axis=0, profile=self.profile)  # type: ignore[arg-type]
        for source in self.sources:
            start, stop = source.rows
            others = [n for i, n in enumerate(source.data.shape) if i != source.axis]
            length = self._length(source)
            usable = min(stop, source.data.shape[source.axis]) - start
            if usable < length or min(others) < self.patch_size:
                raise UserInputError(
                    f"D2R's 3D network needs {length} slices along the degraded axis "
                    f"and {self.patch_size} pixels across, got a volume of shape "
                    f"{tuple(source.data.shape)} with {usable} usable slices (use a "
                    "larger volume, or a smaller patch_sections or train.patch_size)"
                )

    def _length(self, source: PairSource) -> int:
        """Slices of a window along the degraded axis: fine slices, or sections if observed."""
        return self.window // self.factor if source.observed else self.window

    def _crop(self, rng: np.random.Generator, source: PairSource) -> np.ndarray:
        """A window, degraded axis first, normalised, rotated/flipped."""
        start, stop = source.rows
        length = self._length(source)
        lo = int(rng.integers(start, stop - length + 1))
        region = []
        for axis, size in enumerate(source.data.shape):
            if axis == source.axis:
                region.append(slice(lo, lo + length))
            else:
                first = int(rng.integers(size - self.patch_size + 1))
                region.append(slice(first, first + self.patch_size))
        crop = np.moveaxis(np.asarray(source.data[tuple(region)], np.float32), source.axis, 0)
        crop = source.normalization.apply(crop)
        if rng.integers(2):
            crop = crop.transpose(0, 2, 1)
        flips = tuple(axis for axis in (0, 1, 2) if rng.integers(2))
        return np.flip(crop, flips) if flips else crop

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        shape = (batch_size, 3, self.window, self.patch_size, self.patch_size)
        inputs, targets = (
            np.empty((batch_size, 2, *shape[2:]), np.float32),
            np.empty(shape, np.float32),
        )
        for i in range(batch_size):
            source = self.sources[rng.integers(len(self.sources))]
            crop = self._crop(rng, source)
            sections = crop if source.observed else self.sectioning.apply(crop)[0]
            cubic = upsample_axial(sections, self.factor, kind="cubic", axis=0)
            inputs[i, 0] = targets[i, 2] = np.repeat(sections, self.factor, axis=0)
            inputs[i, 1] = cubic
            targets[i, 0] = cubic if source.observed else crop
            targets[i, 1] = 0.0 if source.observed else 1.0
        return inputs, targets


def stage_three_loss(
    *, margin: int, factor: int, profile: str, hf_weight: float, consistency_weight: float
) -> Any:
    """The loss of packed targets (``StageThreePairs``), away from the margin sections.

    L1 to the fine target plus ``hf_weight`` times the L1 of the à-trous
    detail bands (on the planes that contain the restored axis, where thick
    sections lose their detail), both only where a target exists; plus
    ``consistency_weight`` times the L1 between the re-sectioned prediction
    and the sections, for every sample.
    """
    cut = margin * factor
    sectioning = AxialSectioning(factor, axis=2, profile=profile)  # type: ignore[arg-type]

    def loss(prediction: torch.Tensor, packed: torch.Tensor) -> torch.Tensor:
        target, weight, repeated = packed[:, :1], packed[:, 1:2, :1, :1, :1], packed[:, 2:3]
        inner = slice(cut, prediction.shape[2] - cut)
        share = weight.sum().clamp(min=1.0) / len(weight)
        error = (prediction - target)[:, :, inner].abs() * weight
        value = error.mean() / share
        if hf_weight:
            both = torch.cat([prediction, target])  # (2N, 1, F, H, W)
            n, _, depth, height, width = both.shape
            planes = both.permute(0, 4, 1, 2, 3).reshape(n * width, 1, depth, height)
            details, _ = atrous_decompose(planes, num_levels=2)
            for band in details:
                mine, theirs = band.reshape(n, width, depth, height)[:, :, inner].chunk(2)
                value = value + hf_weight * ((mine - theirs).abs() * weight[..., 0]).mean() / share
        if consistency_weight:
            resectioned, _ = sectioning.apply(prediction)
            observed = repeated[:, :, ::factor]
            value = value + consistency_weight * F.l1_loss(
                resectioned[:, :, margin : -margin or None],
                observed[:, :, margin : -margin or None],
            )
        return value

    return loss
