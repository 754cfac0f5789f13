"""The SkelEM refiner's shipped prior: what the shipped skeleton prior leaves, at any factor.

The refiner prior is one network for every axial factor, as the skeleton's
is: it learns to denoise the residual of the shipped skeleton prior (not
fine-tuned) on sharp sections degraded at factors spread from 2 to 12,
fractional included. Each (stack, factor) scales its residuals to unit RMS,
as SkelEM scales a volume's, so the prior works in the units its fine-tune
on a user's volume will use.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from vemrestore.methods.skelem.refiner import residual_scale, skeleton_pairs
from vemrestore.methods.skeleton_prior import shipped_skeleton
from vemrestore.normalize import PercentileNormalization

__all__ = ["mixed_factor_pool", "prior_factors"]


def prior_factors(low: float, high: float, num: int) -> list[float]:
    """``num`` factors log-spaced from ``low`` to ``high``, rounded to 0.01.

    Examples
    --------
    >>> prior_factors(2.0, 12.0, 4)
    [2.0, 3.63, 6.6, 12.0]
    """
    return [round(float(f), 2) for f in np.geomspace(low, high, num)]


def mixed_factor_pool(
    stacks: Sequence[np.ndarray],
    factors: Sequence[float],
    *,
    counts: Sequence[int],
    patch_size: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Conditioning (N, 2, P, P) and unit-RMS residuals (N, 1, P, P) of the shipped skeleton.

    For each factor, the shipped skeleton prior restores ``counts[i]`` XY
    pairs of stack ``i`` degraded at that factor (``skeleton_pairs``: the
    conditioning is [skeleton output, cubic input]).

    Parameters
    ----------
    stacks : sequence of numpy.ndarray
        Normalised stacks of sharp sections, each (Z, Y, X) float32, every
        section usable (as in ``MixedFactorSampler``).
    factors : sequence of float
        Axial factors (each at least 2: the skeleton prior's range).
    counts : sequence of int
        Patches per factor from each stack.
    patch_size : int
        Side of the patches.
    seed : int
        Seed of the patch positions; the same seed gives the same pool.
    """
    identity = PercentileNormalization(0.0, 1.0)  # the stacks are normalised already
    rng = np.random.default_rng(seed)
    conds, residuals = [], []
    for factor in factors:
        skeleton = shipped_skeleton(factor, identity)
        for stack, count in zip(stacks, counts, strict=True):
            cond, residual = skeleton_pairs(
                skeleton,
                stack,
                np.arange(stack.shape[0]),
                num=count,
                patch_size=patch_size,
                rng=rng,
            )
            conds.append(cond)
            residuals.append(residual / np.float32(residual_scale(residual)))
    return np.concatenate(conds), np.concatenate(residuals)
