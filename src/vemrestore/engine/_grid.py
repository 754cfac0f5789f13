"""The regular block grid in output space (one block = one output chunk)."""

from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass

from vemrestore.errors import UserInputError

__all__ = ["Block", "block_grid", "check_block_shape"]

Region = tuple[slice, slice, slice]


@dataclass(frozen=True)
class Block:
    """One block of the output grid.

    Attributes
    ----------
    index : tuple of int
        Position (z, y, x) of the block in the grid (equal to its chunk index).
    region : tuple of slice
        Absolute output voxels (z, y, x) the block writes; edge blocks are
        clipped to the volume, so they may be smaller than the block shape.
    """

    index: tuple[int, int, int]
    region: Region

    @property
    def id(self) -> str:
        """Stable name ``"z_y_x"`` of the block, used by the completion ledger."""
        return "_".join(str(i) for i in self.index)


def check_block_shape(block_shape: tuple[int, int, int]) -> tuple[int, int, int]:
    """Validate ``block_shape`` (three positive integers) and return it as a tuple.

    Raises
    ------
    UserInputError
        If ``block_shape`` is not three positive integers.
    """
    try:
        values = tuple(operator.index(v) for v in block_shape)
    except TypeError:
        values = ()
    if len(values) != 3 or min(values) <= 0:
        raise UserInputError(
            f"block_shape must be three positive integers (z, y, x), got {block_shape!r} "
            "(for example block_shape=(64, 256, 256))"
        )
    return values  # type: ignore[return-value]


def block_grid(shape: tuple[int, int, int], block_shape: tuple[int, int, int]) -> list[Block]:
    """Cut an output volume of ``shape`` into blocks of ``block_shape``, in C order.

    Parameters
    ----------
    shape : tuple of int
        Output shape (Z, Y, X).
    block_shape : tuple of int
        Block (= output chunk) shape (z, y, x); the last block along each axis
        is clipped to the volume.

    Returns
    -------
    list of Block
        ``prod(ceil(shape / block_shape))`` blocks that tile ``shape`` exactly,
        without overlap.

    Examples
    --------
    >>> [b.id for b in block_grid((3, 4, 4), (2, 4, 4))]
    ['0_0_0', '1_0_0']
    >>> block_grid((3, 4, 4), (2, 4, 4))[1].region
    (slice(2, 3, None), slice(0, 4, None), slice(0, 4, None))
    """
    block_shape = check_block_shape(block_shape)
    counts = [math.ceil(n / b) for n, b in zip(shape, block_shape, strict=True)]
    blocks = []
    for index in itertools.product(*(range(c) for c in counts)):
        region = tuple(
            slice(i * b, min((i + 1) * b, n))
            for i, b, n in zip(index, block_shape, shape, strict=True)
        )
        blocks.append(Block(index, region))  # type: ignore[arg-type]
    return blocks
