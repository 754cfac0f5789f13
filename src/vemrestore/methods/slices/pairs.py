"""Self-supervised training data for the slice diffusion restorer.

Known-good sections of the user's own stack are hidden (one or several
consecutive sections, or random regions of one section) and the network
learns to restore them from the sections around them. No damage is
simulated: a hidden region is simply unknown.

Network input, per stack of ``D = 2 * num_context + gap`` sections:

0. ``x_t``: the noisy sample;
1. the estimate: known values, and linear interpolation along z where unknown
   (or optical-flow interpolation between the sections bounding the gap, with
   ``estimate="flow"``);
2. the mask of unknown pixels (1 = restore);
3. the position of each section across the gap (0 at the last given section
   above, 1 at the first given section below);
4. (training only) the timestep, constant, unpacked by ``PackedDenoiser``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from vemrestore.diffusion import diffusion_target
from vemrestore.errors import UserInputError
from vemrestore.methods._trained import ArraySampler
from vemrestore.methods.slices.interp import fill_linear, interpolate_flow
from vemrestore.models.anisotropic3d import AnisotropicDenoiser3D

__all__ = [
    "NUM_INPUTS",
    "PackedDenoiser",
    "WindowSampler",
    "gap_positions",
    "joint_and_heads_loss",
    "random_region",
]

NUM_INPUTS = 4
# With estimate="flow": the flow of a training window is computed on a region of at most
# this side (about 3 s on one core), for at most ``_MAX_FLOW_WINDOWS`` windows (seeded
# choice), so that large stacks cost minutes, not hours, before training starts.
_FLOW_REGION = 512
_MAX_FLOW_WINDOWS = 128


def gap_positions(num_context: int, gap: int) -> np.ndarray:
    """Position channel (D,) of a stack: 0 at the last section above, 1 at the first below."""
    return (np.arange(2 * num_context + gap) - (num_context - 1)) / (gap + 1)


def random_region(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random (size, size) mask: 1-3 ellipses, thick strokes or bands, 3-60% of the area.

    Generic shapes, not models of any artefact: they only say which pixels
    are unknown.
    """
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    mask = np.zeros((size, size), bool)
    for _ in range(int(rng.integers(1, 4))):
        kind = rng.integers(3)
        cy, cx = rng.uniform(0, size, 2)
        angle = rng.uniform(0, math.pi)
        u = (yy - cy) * math.cos(angle) + (xx - cx) * math.sin(angle)
        v = -(yy - cy) * math.sin(angle) + (xx - cx) * math.cos(angle)
        if kind == 0:  # ellipse
            a, b = rng.uniform(0.05, 0.35, 2) * size
            mask |= (u / a) ** 2 + (v / b) ** 2 <= 1
        elif kind == 1:  # curved stroke
            width = rng.uniform(1.0, 4.0)
            bend = rng.uniform(-2.0, 2.0) / size
            mask |= np.abs(v - bend * u**2) <= width
        else:  # band
            mask |= np.abs(v) <= rng.uniform(2.0, 0.15 * size)
    share = mask.mean()
    if share < 0.03 or share > 0.6:
        return random_region(size, rng)
    return mask


class WindowSampler(ArraySampler):
    """Draw training stacks from the usable sections of a normalised stack.

    Parameters
    ----------
    sections : numpy.ndarray, shape (Z, Y, X)
        Normalised to about [-1, 1].
    usable : numpy.ndarray of bool, shape (Z,)
        Sections that may appear in a training stack (not damaged).
    targets : numpy.ndarray of bool, shape (Z,)
        Sections that may be hidden (the training or the validation share).
    num_context, max_gap, patch_size : int
    region_probability : float
        Share of single-section samples that hide random regions instead of
        the whole section.
    scheduler : diffusers.DDIMScheduler
        Gives the noising and the target for its prediction type.
    estimate : {"linear", "flow"}
        How the estimate channel fills the hidden pixels. ``"flow"``
        interpolates each training window's gap along the optical flow
        between the sections bounding it, once, here (about 3 s per window
        on one core), as prediction does on whole blocks: on a random region
        of at most 512^2 of the sections, for at most 128 windows; patches
        are drawn inside those regions.
    progress : bool
        Show a progress bar while the flow estimates are computed.
    """

    def __init__(
        self,
        sections: np.ndarray,
        *,
        usable: np.ndarray,
        targets: np.ndarray,
        num_context: int,
        max_gap: int,
        patch_size: int,
        region_probability: float,
        scheduler: Any,
        estimate: Literal["linear", "flow"] = "linear",
        progress: bool = False,
    ) -> None:
        num, height, width = sections.shape
        if min(height, width) < patch_size:
            raise UserInputError(
                f"train.patch_size={patch_size} is larger than the sections ({height}x{width}); "
                "use a smaller train.patch_size"
            )
        self.sections = sections
        self.num_context = num_context
        self.patch_size = patch_size
        self.region_probability = region_probability
        self.scheduler = scheduler
        self.windows: dict[int, np.ndarray] = {}
        for gap in range(1, max_gap + 1):
            starts = [
                z
                for z in range(num_context, num - gap - num_context + 1)
                if usable[z - num_context : z + gap + num_context].all()
                and targets[z : z + gap].all()
            ]
            if starts:
                self.windows[gap] = np.array(starts)
        if not self.windows:
            raise UserInputError(
                f"no {2 * num_context + 1} consecutive undamaged sections to train on in a stack "
                f"of Z={num} (train on a longer stack, or load a trained model)"
            )
        self._set_gaps()
        self.flow = self._flow_estimates(progress) if estimate == "flow" else None

    def _set_gaps(self) -> None:
        """The gap lengths of the windows, and their draw weights (shorter gaps more often)."""
        self.gaps = np.array(sorted(self.windows))
        self.gap_weights = 1.0 / self.gaps / np.sum(1.0 / self.gaps)

    def _flow_estimates(self, progress: bool) -> dict[tuple[int, int], tuple[int, int, np.ndarray]]:
        """By (start, gap): the origin (y, x) of a region and the flow interpolation
        (gap, h, w) of the window's hidden sections there. Keeps only the windows computed."""
        from rich.progress import track

        rng = np.random.default_rng(0)
        keys = [(int(z), int(gap)) for gap, starts in self.windows.items() for z in starts]
        if len(keys) > _MAX_FLOW_WINDOWS:
            keys = [keys[i] for i in sorted(rng.choice(len(keys), _MAX_FLOW_WINDOWS, False))]
            self.windows = {
                gap: np.array([z for z, g in keys if g == gap])
                for gap in self.windows
                if any(g == gap for _, g in keys)
            }
            self._set_gaps()
        _, height, width = self.sections.shape
        side = max(_FLOW_REGION, self.patch_size)  # a patch must fit in the region
        h, w = min(height, side), min(width, side)
        estimates = {}
        for z, gap in track(keys, "flow estimates", disable=not progress):
            y, x = int(rng.integers(height - h + 1)), int(rng.integers(width - w + 1))
            region = (slice(y, y + h), slice(x, x + w))
            above, below = self.sections[z - 1][region], self.sections[z + gap][region]
            positions = np.arange(1, gap + 1) / (gap + 1)
            estimates[z, gap] = (y, x, interpolate_flow(above, below, positions))
        return estimates

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (N, 5, D, P, P) and targets (N, 2, D, P, P) as float32 arrays."""
        gap = int(rng.choice(self.gaps, p=self.gap_weights))
        c, p = self.num_context, self.patch_size
        depth = 2 * c + gap
        _, height, width = self.sections.shape
        truth = np.empty((batch_size, depth, p, p), np.float32)
        unknown = np.zeros((batch_size, depth, p, p), bool)
        estimate = np.empty_like(truth)
        for i in range(batch_size):
            z = int(rng.choice(self.windows[gap]))
            y0, x0, flow = (0, 0, None) if self.flow is None else self.flow[z, gap]
            h, w = (height, width) if flow is None else flow.shape[1:]
            y, x = int(rng.integers(h - p + 1)), int(rng.integers(w - p + 1))
            # The truth and, with flow, the flow-filled window travel through the same flips.
            crop = self.sections[
                None, z - c : z + gap + c, y0 + y : y0 + y + p, x0 + x : x0 + x + p
            ]
            if flow is not None:
                guess = crop[0].copy()
                guess[c : c + gap] = flow[:, y : y + p, x : x + p]
                crop = np.concatenate([crop, guess[None]])
            crop = np.rot90(crop, int(rng.integers(4)), axes=(2, 3))
            if rng.integers(2):
                crop = crop[:, :, :, ::-1]
            if rng.integers(2):
                crop = crop[:, ::-1]
            truth[i] = crop[0]
            if gap == 1 and rng.random() < self.region_probability:
                unknown[i, c] = random_region(p, rng)
            else:
                unknown[i, c : c + gap] = True
            if self.flow is None:
                estimate[i] = fill_linear(truth[i], unknown[i])
            else:
                estimate[i] = np.where(unknown[i], crop[1], truth[i])
        timesteps = rng.integers(0, self.scheduler.config.num_train_timesteps, batch_size)
        noise = rng.standard_normal(truth.shape, dtype=np.float32)
        t = torch.from_numpy(timesteps)
        x0, eps = torch.from_numpy(truth), torch.from_numpy(noise)
        noisy = self.scheduler.add_noise(x0, eps, t).numpy()
        target = diffusion_target(self.scheduler, x0, eps, t).numpy()
        position = np.broadcast_to(
            gap_positions(c, gap).astype(np.float32)[None, :, None, None], truth.shape
        )
        t_plane = np.broadcast_to(timesteps.astype(np.float32)[:, None, None, None], truth.shape)
        inputs = np.stack([noisy, estimate, unknown, position, t_plane], axis=1)
        targets = np.stack([target, unknown.astype(np.float32)], axis=1)
        return inputs.astype(np.float32), targets.astype(np.float32)


class PackedDenoiser(nn.Module):
    """Adapter for the shared training loop: one tensor in, joint and head outputs out.

    ``forward(inputs)`` takes (N, 5, D, H, W) (the timestep in channel 4) and
    returns (N, 1 + K, D, H, W): the joint estimate then the K heads. With
    ``residual`` the network output is added to the estimate (channel 1),
    for ``prediction_type="sample"``: the network learns the correction to
    the estimate (linear or flow interpolation).
    """

    def __init__(self, net: AnisotropicDenoiser3D, *, residual: bool) -> None:
        super().__init__()
        self.net = net
        self.residual = residual

    def denoise(
        self, inputs: torch.Tensor, timesteps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Joint (N, 1, D, H, W) and heads (N, K, D, H, W) for 4-channel ``inputs``."""
        joint, heads = self.net(inputs[:, :NUM_INPUTS], timesteps)
        if self.residual:
            estimate = inputs[:, 1:2]
            joint, heads = joint + estimate, heads + estimate
        return joint, heads

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        timesteps = inputs[:, NUM_INPUTS, 0, 0, 0].round().long()
        joint, heads = self.denoise(inputs, timesteps)
        return torch.cat([joint, heads], dim=1)


def joint_and_heads_loss(prediction: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Masked MSE of the joint estimate plus the mean masked MSE of the heads.

    ``prediction`` is (N, 1 + K, D, H, W) from ``PackedDenoiser``; ``targets``
    is (N, 2, D, H, W): the diffusion target and the mask of unknown pixels.
    """
    target, weight = targets[:, :1], targets[:, 1:2]
    per_output = ((prediction - target).square() * weight).sum(dim=(0, 2, 3, 4))
    per_output = per_output / weight.sum().clamp_min(1.0)
    return per_output[0] + per_output[1:].mean()
