"""Typed command-line values given as ``Z,Y,X`` text: voxel sizes and block shapes.

A bad value is a usage error, shown as one ``error:`` line naming the option
(see `vemrestore.cli._errors`).
"""

from __future__ import annotations

import math
import re
from typing import Any

import typer
import typer.core

__all__ = ["BlockShape", "ShapeCommand", "VoxelSize", "parse_block", "parse_voxel_size"]

_WHOLE = re.compile(r"^\d+$")


class VoxelSize(tuple):  # type: ignore[type-arg]
    """A voxel size (z, y, x) in nm, parsed from ``Z,Y,X`` (e.g. ``80,10,10``)."""


class BlockShape(tuple):  # type: ignore[type-arg]
    """A block shape (z, y, x) in voxels, parsed from ``Z,Y,X`` (e.g. ``64,128,128``)."""


def _three(text: Any, what: str, example: str) -> list[str]:
    parts = [p.strip() for p in str(text).strip().strip("()").split(",")]
    if len(parts) != 3 or not all(parts):
        raise typer.BadParameter(f"expected {what} as Z,Y,X (e.g. {example}), got {text!r}")
    return parts


def parse_voxel_size(text: Any) -> VoxelSize:
    """``"80,10,10"`` -> ``VoxelSize((80.0, 10.0, 10.0))``: three positive numbers in nm.

    Raises
    ------
    typer.BadParameter
        For anything else (one line naming the value and an example).

    Examples
    --------
    >>> parse_voxel_size("25, 10, 10")
    (25.0, 10.0, 10.0)
    """
    if isinstance(text, tuple):
        return VoxelSize(text)
    parts = _three(text, "three voxel sizes in nm", "80,10,10")
    try:
        values = [float(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise typer.BadParameter(
            f"voxel sizes must be three positive numbers in nm as Z,Y,X (e.g. 80,10,10), "
            f"got {text!r}"
        )
    return VoxelSize(values)


def parse_block(text: Any) -> BlockShape:
    """``"64,128,128"`` -> ``BlockShape((64, 128, 128))``: three positive whole numbers.

    Raises
    ------
    typer.BadParameter
        For anything else (one line naming the value and an example).

    Examples
    --------
    >>> parse_block("8,16,16")
    (8, 16, 16)
    """
    if isinstance(text, tuple):
        return BlockShape(text)
    parts = _three(text, "a block shape", "64,128,128")
    if not all(_WHOLE.match(p) and int(p) > 0 for p in parts):
        raise typer.BadParameter(
            f"a block shape is three positive whole numbers as Z,Y,X (e.g. 64,128,128), "
            f"got {text!r}"
        )
    return BlockShape(int(p) for p in parts)


class ShapeCommand(typer.core.TyperCommand):
    """A command whose ``--block`` also takes the older form of three words, ``--block Z Y X``."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, join_block_words(args))


def join_block_words(args: list[str]) -> list[str]:
    """``[..., "--block", "8", "16", "16", ...]`` -> ``[..., "--block", "8,16,16", ...]``.

    Examples
    --------
    >>> join_block_words(["IN", "OUT", "--block", "8", "16", "16"])
    ['IN', 'OUT', '--block', '8,16,16']
    >>> join_block_words(["--block", "8,16,16", "IN"])
    ['--block', '8,16,16', 'IN']
    """
    joined: list[str] = []
    i = 0
    while i < len(args):
        words = args[i + 1 : i + 4]
        if args[i] == "--block" and len(words) == 3 and all(_WHOLE.match(w) for w in words):
            joined += ["--block", ",".join(words)]
            i += 4
        else:
            joined.append(args[i])
            i += 1
    return joined
