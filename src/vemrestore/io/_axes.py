"""Bring any stored axis layout to a single-channel ZYX volume."""

from __future__ import annotations

from typing import Any

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io._common import DEFAULT_AXES

__all__ = ["to_zyx"]

_CHANNEL = "CS"  # channel, samples (RGB)
_SEQUENCE = "IQ"  # tifffile: image sequence / unknown; taken as Z when it is the only one


def to_zyx(data: Any, axes: str | None, *, source: str, channel: int | None) -> tuple[Any, str]:
    """Select ``channel``, drop singleton axes (but Z, Y and X) and order the rest as ZYX.

    Parameters
    ----------
    data : numpy.ndarray or dask.array.Array
        The array as stored.
    axes : str or None
        One letter per axis; None means the file does not say, and 2D to 5D
        arrays are taken as YX, ZYX, CZYX, TCZYX.
    source : str
        The path, for messages.
    channel : int or None
        Which channel to keep when there is a channel axis.

    Returns
    -------
    data : numpy.ndarray or dask.array.Array, shape (Z, Y, X)
        NumPy input gives a contiguous NumPy array.
    axes : str
        The axes of the stored array (as read or as assumed).

    Raises
    ------
    UserInputError
        For a 2D image, a channel axis without ``channel``, a channel out of
        range, a time series, or an axis that cannot be interpreted.
    """
    shape = tuple(int(n) for n in data.shape)
    if axes is None:
        if data.ndim not in DEFAULT_AXES:
            raise UserInputError(
                f"{source} has {data.ndim} dimensions (shape {shape}); "
                "expected a 3D volume (Z, Y, X) or 4D (C, Z, Y, X)"
            )
        axes = DEFAULT_AXES[data.ndim]
    axes = axes.upper()
    if len(axes) != data.ndim:
        raise UserInputError(f"{source}: axes {axes!r} do not match the array shape {shape}")
    letters = list(axes)
    if "Z" not in letters:
        sequence = [i for i, a in enumerate(letters) if a in _SEQUENCE and shape[i] > 1]
        if len(sequence) == 1:
            letters[sequence[0]] = "Z"

    index: list[Any] = []
    kept: list[str] = []
    channel_axes = [a for a, n in zip(letters, shape, strict=True) if a in _CHANNEL and n > 1]
    if len(channel_axes) > 1:
        raise UserInputError(
            f"{source} has more than one channel axis (axes {axes}, shape {shape}); "
            "split the channels into separate files first"
        )
    num_channels = 1
    for letter, size in zip(letters, shape, strict=True):
        if letter in _CHANNEL and size > 1:
            num_channels = size
            if channel is None:
                raise UserInputError(
                    f"{source} has {size} channels (axes {axes}); "
                    f"pass channel=0..{size - 1} / --channel"
                )
            if not 0 <= channel < size:
                raise UserInputError(
                    f"channel={channel} is out of range: {source} has {size} channels "
                    f"(axes {axes}); pass channel=0..{size - 1} / --channel"
                )
            index.append(channel)
        elif size == 1 and (letter not in "ZYX" or letter in kept):
            index.append(0)  # a stack of one section keeps its Z axis
        elif letter in "ZYX" and letter not in kept:
            index.append(slice(None))
            kept.append(letter)
        elif letter == "T":
            raise UserInputError(
                f"{source} has {size} time points (axes {axes}); "
                "vemrestore restores one 3D volume at a time: save one time point as its own file"
            )
        else:
            raise UserInputError(
                f"{source} has an axis {letter!r} of size {size} that is not Z, Y, X or a channel "
                f"(axes {axes}, shape {shape}); save the volume as ZYX"
            )
    if channel is not None and num_channels == 1 and channel != 0:
        raise UserInputError(
            f"channel={channel} is out of range: {source} has a single channel (axes {axes}); "
            "drop channel= / --channel"
        )
    if "Z" not in kept:
        raise UserInputError(
            f"{source} is a 2D image (shape {shape}, axes {axes}); "
            "a 3D volume (Z, Y, X) is needed: stack the slices into one file"
        )
    if sorted(kept) != ["X", "Y", "Z"]:
        raise UserInputError(f"{source}: cannot find Y and X axes in axes {axes} (shape {shape})")
    out = data[tuple(index)]
    order = [kept.index(a) for a in "ZYX"]
    if order != [0, 1, 2]:
        out = out.transpose(order)
    if isinstance(out, np.ndarray):
        out = np.ascontiguousarray(out)
    return out, axes
