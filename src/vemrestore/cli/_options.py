"""Typed command-line values given as ``Z,Y,X`` text: voxel sizes and block shapes.

A bad value is a usage error, shown as one ``error:`` line naming the option
(see `vemrestore.cli._errors`).

Examples
--------
>>> parse_voxel_size("25, 10, 10"), parse_block("8,16,16")
((25.0, 10.0, 10.0), (8, 16, 16))
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import typer
import typer.core

__all__ = ["BlockShape", "ShapeCommand", "VoxelSize", "parse_block", "parse_voxel_size"]

_WHOLE = re.compile(r"^\d+$")


class VoxelSize(tuple):  # type: ignore[type-arg]
    """A voxel size (z, y, x) in nm, parsed from ``Z,Y,X`` (e.g. ``80,10,10``)."""


class BlockShape(tuple):  # type: ignore[type-arg]
    """A block shape (z, y, x) in voxels, parsed from ``Z,Y,X`` (e.g. ``64,128,128``)."""


def _parse_zyx(
    text: Any,
    kind: type[tuple],
    convert: Callable[[str], float],
    *,
    rule: str,
    example: str,
) -> Any:
    """``Z,Y,X`` text as a ``kind`` tuple of three converted values, each > 0 and finite.

    Raises
    ------
    typer.BadParameter
        For anything else: one line with the ``rule``, an example and the value.
    """
    if isinstance(text, tuple):
        return kind(text)
    parts = [p.strip() for p in str(text).strip().strip("()").split(",")]
    try:
        values = [convert(p) for p in parts]
    except ValueError:
        values = []
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise typer.BadParameter(f"{rule} as Z,Y,X (e.g. {example}), got {text!r}")
    return kind(values)


def _whole(text: str) -> int:
    if not _WHOLE.match(text):
        raise ValueError(text)
    return int(text)


def parse_voxel_size(text: Any) -> VoxelSize:
    """``"80,10,10"`` -> ``VoxelSize((80.0, 10.0, 10.0))``: three positive numbers in nm."""
    rule = "voxel sizes must be three positive numbers in nm"
    return _parse_zyx(text, VoxelSize, float, rule=rule, example="80,10,10")


def parse_block(text: Any) -> BlockShape:
    """``"64,128,128"`` -> ``BlockShape((64, 128, 128))``: three positive whole numbers."""
    return _parse_zyx(
        text,
        BlockShape,
        _whole,
        rule="a block shape is three positive whole numbers",
        example="64,128,128",
    )


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
