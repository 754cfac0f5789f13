"""The skeleton's shipped prior: its training pairs (many stacks, any axial factor) and
the prior alone as a trained skeleton.

The prior is one factor-conditioned network (``SkeletonConfig.factor_input``)
that fine-tunes on a user's volume at whatever factor it has. Each batch draws
a factor log-uniformly from a range (fractional values included), and its
samples from several stacks of sharp sections (any mix of data sets, each
normalised on its own as a user's input is), through the skeleton's own
``PairSampler`` at that factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass

import numpy as np

from vemrestore.methods._trained import ArraySampler
from vemrestore.methods.priors import SKELETON_PRIOR, apply_prior
from vemrestore.methods.skeleton import PairSampler, Skeleton, SkeletonConfig
from vemrestore.normalize import PercentileNormalization

__all__ = ["MixedFactorSampler", "shipped_skeleton"]


def shipped_skeleton(factor: float, normalization: PercentileNormalization) -> Skeleton:
    """The shipped prior, not fine-tuned, as a trained skeleton for ``factor``.

    What fine-tuning starts from: for comparisons with it, or a frozen
    skeleton for SkelEM. ``normalization`` maps the input's intensities to
    the network's range (e.g. ``PercentileNormalization.from_data(sections)``).

    Raises
    ------
    UserInputError
        If the shipped weights are missing or damaged (``read_prior``).
    """
    method = Skeleton(SkeletonConfig(scale_factor=factor, **SKELETON_PRIOR, prior="shipped"))
    networks = method.build_networks()
    method.prior_record = apply_prior(networks["unet"], "shipped", "skeleton")
    method.set_trained(networks, normalization=normalization)
    return method


@dataclass(eq=False)
class MixedFactorSampler(ArraySampler):
    """(cubic input + factor channel, residual target) pairs at a random factor per batch.

    Parameters
    ----------
    stacks : sequence of numpy.ndarray
        Normalised stacks of sharp sections, each (Z, Y, X) float32; the
        sections of a stack are drawn from, in whole (``context_planes=0``).
    weights : sequence of float
        Relative share of the samples each stack gives (normalised here).
    factor_range : (float, float)
        Smallest and largest factor drawn; log-uniform, rounded to 0.01.
    profile : {"box", "gaussian"}
        Slice profile of the axial forward model.
    patch_size : int
        Side of the patches; every stack must fit ``patch_size + 4 * max factor`` rows.
    """

    stacks: Sequence[np.ndarray]
    weights: Sequence[float]
    _: KW_ONLY
    factor_range: tuple[float, float] = (2.0, 12.0)
    profile: str = "box"
    patch_size: int = 48

    def __post_init__(self) -> None:
        if len(self.stacks) != len(self.weights) or not self.stacks:
            raise ValueError("give one weight per stack, and at least one stack")
        total = float(np.sum(self.weights))
        self.shares = np.asarray(self.weights, np.float64) / total
        low, high = self.factor_range
        if not 1.0 < low <= high:
            raise ValueError(f"factor_range must satisfy 1 < low <= high, got {self.factor_range}")
        self._log_range = (math.log(low), math.log(high))
        for stack in self.stacks:  # fails early (one clear error) if a stack is too small
            self._sampler(stack, high)

    def _sampler(self, stack: np.ndarray, factor: float) -> PairSampler:
        return PairSampler(
            stack,
            np.arange(stack.shape[0]),
            scale_factor=factor,
            profile=self.profile,
            patch_size=self.patch_size,
            context_planes=0,
            factor_input=True,
        )

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (N, 2, P, P) (cubic, factor channel) and residual targets (N, 1, P, P)."""
        factor = round(float(np.exp(rng.uniform(*self._log_range))), 2)
        counts = rng.multinomial(batch_size, self.shares)
        parts = [
            self._sampler(stack, factor).draw(rng, int(count))
            for stack, count in zip(self.stacks, counts, strict=True)
            if count
        ]
        inputs, targets = zip(*parts, strict=True)
        return np.concatenate(inputs), np.concatenate(targets)
