"""The outputs of one run: which of the method's outputs go where, checked before any work.

A method declares ``method.outputs`` (the first is always ``"restored"``);
a run writes the restoration to ``output_path`` and any other outputs to the
paths of ``extra_outputs``. Each target is checked like a single output (a
known suffix, not the input, not existing unless ``overwrite``), and all must
be of one kind: Zarr (written block by block, resumable) or formats
assembled in memory.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.errors import UserInputError
from vemrestore.io import Volume, check_output_path, format_of, same_file, split_dataset_path
from vemrestore.methods._base import RESTORED, Method

__all__ = [
    "EXTRA_DTYPE",
    "OutputTarget",
    "check_output_names",
    "describe_targets",
    "output_targets",
]

# Outputs other than the restoration are stored as float32, whatever ``output_dtype``.
EXTRA_DTYPE = np.dtype("float32")


@dataclass(frozen=True)
class OutputTarget:
    """Where one of the method's outputs is written.

    Attributes
    ----------
    name : str
        The method output (one of ``method.outputs``).
    path : str or path-like
        The path as given (a non-Zarr one may name an HDF5 dataset).
    file : Path
        The file or Zarr store.
    dtype : numpy.dtype
        Stored dtype.
    option : str
        The argument that named it, for messages (``output_path=...``).
    """

    name: str
    path: str | os.PathLike[str]
    file: Path
    dtype: np.dtype
    option: str

    @property
    def is_zarr(self) -> bool:
        """Whether the output is a Zarr store (written block by block)."""
        return format_of(self.file) == "zarr"


def check_output_names(method: Method, outputs: Sequence[str]) -> tuple[str, ...]:
    """Validate ``outputs`` (distinct names of ``method.outputs``) and return them as a tuple.

    Raises
    ------
    UserInputError
        If ``outputs`` is not a non-empty sequence of distinct output names
        of the method; the message lists the valid ones.
    """
    if isinstance(outputs, str) or not isinstance(outputs, Sequence) or not outputs:
        raise UserInputError(
            f"outputs must be a non-empty sequence of output names, got {outputs!r} "
            f"(for example outputs={tuple(method.outputs)!r})"
        )
    if len(set(outputs)) != len(outputs):
        raise UserInputError(f"outputs={tuple(outputs)!r} names an output twice (name each once)")
    for name in outputs:
        if name not in method.outputs:
            raise UserInputError(
                f"outputs names {name!r}, not an output of method {method.config.method!r} "
                f"(choose from: {', '.join(method.outputs)})"
            )
    return tuple(outputs)


def output_targets(
    method: Method,
    volume: Volume,
    output_path: str | Path | None,
    extra_outputs: Mapping[str, str | Path] | None,
    dtype: np.dtype,
    *,
    overwrite: bool,
) -> list[OutputTarget]:
    """Check every output of a run before any work; the restoration comes first.

    Parameters
    ----------
    method : Method
        The method whose outputs are written.
    volume : Volume
        The input (no output may be its file).
    output_path : str or Path or None
        Where ``"restored"`` goes, stored as ``dtype``; None: nowhere (then
        ``extra_outputs`` must name an output).
    extra_outputs : mapping of str to str or Path, optional
        Other method outputs by name and where they go (float32).
    dtype : numpy.dtype
        Stored dtype of the restoration.
    overwrite : bool
        Whether existing outputs may be replaced.

    Returns
    -------
    list of OutputTarget
        ``"restored"`` first (unless ``output_path`` is None), then the extra
        outputs in the order given.

    Raises
    ------
    UserInputError
        For no output at all, an unknown output name, an unknown suffix, a Zarr output naming
        an array inside a store, Zarr mixed with other formats, an output
        that is the input or another output, or an existing output without
        ``overwrite``.
    """
    targets = [] if output_path is None else [_target(RESTORED, output_path, dtype, "output_path")]
    for name, path in _check_extra_outputs(method, extra_outputs).items():
        targets.append(_target(name, path, EXTRA_DTYPE, f"extra_outputs[{name!r}]"))
    if not targets:
        raise UserInputError(
            "output_path is None and extra_outputs names no output: nothing to write "
            "(give output_path, extra_outputs or both)"
        )
    for target in targets:
        _check_target(target, volume, overwrite=overwrite)
    first = targets[0]
    for target in targets[1:]:
        if target.is_zarr != first.is_zarr:
            zarr, other = (first, target) if first.is_zarr else (target, first)
            raise UserInputError(
                f"{_label(zarr)} is Zarr but {_label(other)} is not; all outputs of a run are "
                "Zarr (written block by block) or none are (assembled in memory) "
                "(give every output a .zarr suffix, or none)"
            )
    for a, b in itertools.combinations(targets, 2):
        if same_file(a.file, b.file):
            raise UserInputError(
                f"{_label(a)} and {_label(b)} are the same file (give each output its own file)"
            )
    return targets


def describe_targets(targets: Sequence[OutputTarget]) -> str:
    """``output_path='a.tif'`` (and the extra outputs) for messages."""
    return " and ".join(_label(t) for t in targets)


def _check_extra_outputs(
    method: Method, extra_outputs: Mapping[str, str | Path] | None
) -> Mapping[str, str | Path]:
    if extra_outputs is None:
        return {}
    valid = tuple(method.outputs[1:])
    choices = ", ".join(valid) if valid else f"none: it has only {RESTORED!r}"
    if not isinstance(extra_outputs, Mapping):
        raise UserInputError(
            f"extra_outputs must map output names to paths, got {type(extra_outputs).__name__} "
            f"(for example {{'name': 'out_name.zarr'}}; outputs of method "
            f"{method.config.method!r}: {choices})"
        )
    for name in extra_outputs:
        if name == RESTORED:
            raise UserInputError(
                f"extra_outputs names {RESTORED!r}, which goes to output_path "
                f"(extra_outputs takes the other outputs of method {method.config.method!r}: "
                f"{choices})"
            )
        if name not in valid:
            raise UserInputError(
                f"extra_outputs names {name!r}, not an output of method {method.config.method!r} "
                f"(choose from: {choices})"
            )
    return extra_outputs


def _target(name: str, path: Any, dtype: np.dtype, option: str) -> OutputTarget:
    if not isinstance(path, str | os.PathLike):
        raise UserInputError(
            f"{option} must be a path, got {type(path).__name__} (for example 'out.zarr')"
        )
    return OutputTarget(name, path, split_dataset_path(path)[0], dtype, option)


def _check_target(target: OutputTarget, volume: Volume, *, overwrite: bool) -> None:
    inner = split_dataset_path(target.path)[1]
    if format_of(target.file, source=target.path) == "zarr" and inner is not None:
        raise UserInputError(
            f"{_label(target)} names an array inside a Zarr store; the result is written as "
            f"an OME-Zarr group (give the store path {str(target.file)!r})"
        )
    if volume.source is not None and same_file(split_dataset_path(volume.source)[0], target.file):
        raise UserInputError(
            f"{_label(target)} is the input {volume.source} (choose another output)"
        )
    check_output_path(target.file, overwrite=overwrite)


def _label(target: OutputTarget) -> str:
    return f"{target.option}={str(target.path)!r}"
