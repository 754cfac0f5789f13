"""Held-out sections and a fixed validation set: the same split for every method."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["Batch", "fixed_validation", "holdout_sections", "split_batches"]

# Every HOLDOUT_EVERY-th section (offset HOLDOUT_OFFSET) is kept for validation.
HOLDOUT_EVERY = 10
HOLDOUT_OFFSET = 5

Batch = tuple[torch.Tensor, torch.Tensor]


def holdout_sections(num_sections: int, *, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (training, validation) sections of a stack of ``num_sections``.

    Every tenth section (5, 15, 25, ...) is held out; a stack too short for
    that holds out its middle section. Stacks of fewer than ``minimum``
    sections hold out none.
    """
    ids = np.arange(num_sections)
    if num_sections < minimum:
        return ids, ids[:0]
    is_val = ids % HOLDOUT_EVERY == HOLDOUT_OFFSET
    if not is_val.any():
        is_val[num_sections // 2] = True
    return ids[~is_val], ids[is_val]


def split_batches(inputs: np.ndarray, targets: np.ndarray, batch_size: int) -> list[Batch]:
    """Arrays of fixed validation samples as a list of (input, target) tensor batches."""
    return list(
        zip(
            torch.from_numpy(inputs).split(batch_size),
            torch.from_numpy(targets).split(batch_size),
            strict=True,
        )
    )


def fixed_validation(
    batches: Sequence[Batch],
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    network: nn.Module | None = None,
) -> Callable[[nn.Module], float]:
    """``validate(model)`` for ``fit_model``: the mean loss over fixed ``batches``.

    Parameters
    ----------
    batches : sequence of (input, target)
        Drawn once, so every validation scores the same samples.
    loss_fn : callable
        ``loss_fn(prediction, target)``, a mean over the batch.
    network : torch.nn.Module, optional
        Score this network instead of the model being trained (when the
        trained model wraps it, e.g. in a loss-specific wrapper).
    """
    count = sum(len(x) for x, _ in batches)

    def validate(model: nn.Module) -> float:
        net = model if network is None else network
        device = next(net.parameters()).device
        total = sum(
            float(loss_fn(net(x.to(device)).float(), y.to(device))) * len(x) for x, y in batches
        )
        return total / count

    return validate
