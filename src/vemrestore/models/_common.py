"""Pieces shared by the networks: argument checks, padding, zero-started layers, FiLM."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ConfiguredNetwork",
    "apply_film",
    "check_divisible",
    "embedding_mlp",
    "mirror_pad",
    "zero_init",
]

Layer = TypeVar("Layer", nn.Conv2d, nn.Conv3d, nn.Linear)


class ConfiguredNetwork(nn.Module):
    """A network that keeps its constructor arguments and checks them.

    Parameters
    ----------
    config : dict
        The constructor arguments of the subclass, by name.

    Attributes
    ----------
    config : dict
        The constructor arguments, saved beside the ``state_dict``:
        ``type(net)(**net.config)`` builds the same network.
    size_multiple : int
        Set by each subclass: input height and width must be multiples of it
        (or are padded to them).

    Examples
    --------
    >>> class Net(ConfiguredNetwork):
    ...     def __init__(self, in_channels: int, out_channels: int) -> None:
    ...         super().__init__({"in_channels": in_channels, "out_channels": out_channels})
    ...         self.check_positive("channel counts", "in_channels", "out_channels")
    >>> Net(1, 2).config
    {'in_channels': 1, 'out_channels': 2}
    >>> Net(1, 0)
    Traceback (most recent call last):
    ...
    ValueError: Net needs positive channel counts, got in_channels=1, out_channels=0
    """

    size_multiple: int

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.config: dict[str, Any] = config

    def check_positive(self, what: str, *names: str) -> None:
        """Raise ``ValueError`` unless the ``config`` values ``names`` are all at least 1.

        Parameters
        ----------
        what : str
            What the values are, for the message, e.g. ``"channel counts"``.
        *names : str
            Keys of ``config``.
        """
        self._check_minimum(f"positive {what}", 1, names)

    def check_non_negative(self, what: str, *names: str) -> None:
        """Raise ``ValueError`` unless the ``config`` values ``names`` are all at least 0.

        Parameters as for ``check_positive``.
        """
        self._check_minimum(f"non-negative {what}", 0, names)

    def _check_minimum(self, need: str, minimum: int, names: tuple[str, ...]) -> None:
        if min(self.config[name] for name in names) < minimum:
            got = ", ".join(f"{name}={self.config[name]}" for name in names)
            raise ValueError(f"{type(self).__name__} needs {need}, got {got}")

    def check_size_multiple(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` has height and width multiples of ``size_multiple``."""
        multiple = self.size_multiple
        if x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(
                f"{type(self).__name__} input height and width must be multiples of {multiple}, "
                f"got {tuple(x.shape[-2:])} (pad the input first)"
            )


def check_divisible(channels: int, num_heads: int) -> None:
    """Raise ``ValueError`` unless ``channels`` splits evenly into ``num_heads`` heads."""
    if channels % num_heads:
        raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")


def mirror_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """Pad the last two dimensions by ``(left, right, top, bottom)`` pixels.

    Reflection padding where every pad is shorter than its dimension, edge
    replication otherwise.
    """
    left, right, top, bottom = pad
    h, w = x.shape[-2:]
    mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "replicate"
    return F.pad(x, pad, mode=mode)


def zero_init(layer: Layer) -> Layer:
    """Set the weight and bias of ``layer`` to zero (an output that starts silent); return it."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


def embedding_mlp(in_features: int, width: int) -> nn.Sequential:
    """``Linear(in_features, width)``, SiLU, ``Linear(width, width)``: embeds the timestep."""
    return nn.Sequential(nn.Linear(in_features, width), nn.SiLU(), nn.Linear(width, width))


def apply_film(h: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """FiLM: ``h * (1 + scale) + shift`` with ``scale, shift`` the halves of ``params`` (N, 2C)."""
    params = params.reshape(*params.shape, *(1,) * (h.ndim - 2))
    scale, shift = params.chunk(2, dim=1)
    return h * (1 + scale) + shift
