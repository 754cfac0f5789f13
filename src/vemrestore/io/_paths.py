"""Path handling: format from suffix, ``file.h5:/dataset`` syntax, output checks."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from vemrestore.errors import UserInputError

__all__ = [
    "SUPPORTED_FORMATS",
    "check_output_path",
    "format_of",
    "refuse_outputs_over_inputs",
    "same_file",
    "split_dataset_path",
]

_SUFFIXES = {
    ".tif": "tiff",
    ".tiff": "tiff",
    ".h5": "hdf5",
    ".hdf5": "hdf5",
    ".hdf": "hdf5",
    ".zarr": "zarr",
    ".mrc": "mrc",
    ".rec": "mrc",
    ".map": "mrc",
    ".st": "mrc",
}
_CONTAINERS = ("hdf5", "zarr")

SUPPORTED_FORMATS = (
    "TIFF (.tif, .tiff), HDF5 (.h5, .hdf5, .hdf; file.h5:/dataset), "
    "Zarr/OME-Zarr (.zarr; store.zarr:/array), MRC (.mrc, .rec, .map, .st)"
)


def split_dataset_path(path: str | os.PathLike[str]) -> tuple[Path, str | None]:
    """Split ``file.h5:/group/dataset`` or ``store.zarr:/array`` into file and inner path.

    Only the last ``:`` is considered, and only when the part before it ends
    in an HDF5 or Zarr suffix (and the whole string is not itself an existing
    file). A path inside a Zarr store such as ``store.zarr/0`` is split at the
    store too.

    Parameters
    ----------
    path : str or path-like
        What the user gave.

    Returns
    -------
    file : pathlib.Path
        The file or Zarr store.
    inner : str or None
        The dataset/array path inside it without a leading ``/``, or None.

    Examples
    --------
    >>> split_dataset_path("run1/vol.h5:/raw/em")
    (PosixPath('run1/vol.h5'), 'raw/em')
    >>> split_dataset_path("vol.tif")
    (PosixPath('vol.tif'), None)
    """
    text = os.fspath(path)
    head, sep, tail = text.rpartition(":")
    if sep and _SUFFIXES.get(Path(head).suffix.lower()) in _CONTAINERS and not Path(text).exists():
        return Path(head), tail.strip("/") or None
    file = Path(text)
    if file.suffix.lower() not in _SUFFIXES:
        for depth, parent in enumerate(file.parents):
            if parent.suffix.lower() == ".zarr":
                return parent, "/".join(file.parts[-(depth + 1) :])
    return file, None


def format_of(file: Path, *, source: str | os.PathLike[str] | None = None) -> str:
    """``"tiff"``, ``"hdf5"``, ``"zarr"`` or ``"mrc"`` from the suffix of ``file``.

    Raises
    ------
    UserInputError
        For an unknown suffix; the message lists the supported formats.
    """
    fmt = _SUFFIXES.get(file.suffix.lower())
    if fmt is None:
        raise UserInputError(
            f"unknown volume format for {source or file} (suffix {file.suffix or 'none'!r}); "
            f"supported: {SUPPORTED_FORMATS}"
        )
    return fmt


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name the same file or directory (after resolving links)."""
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def check_output_path(path: Path, *, overwrite: bool) -> None:
    """Refuse an output path that exists (unless ``overwrite``) or whose directory is unusable.

    Raises
    ------
    UserInputError
        When the output exists and ``overwrite`` is False, or its directory is
        missing or not writable.
    """
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise UserInputError(
            f"cannot write {path}: {parent} is a file, not a directory (choose another path)"
        )
    if not parent.is_dir():
        raise UserInputError(
            f"cannot write {path}: directory {parent} does not exist (create it first)"
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UserInputError(
            f"cannot write {path}: directory {parent} is not writable (choose another output path)"
        )
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise UserInputError(f"{path} exists; pass overwrite=True / --overwrite to replace it")


PathArg = str | os.PathLike[str] | None


def refuse_outputs_over_inputs(
    outputs: Mapping[str, PathArg], inputs: Mapping[str, PathArg]
) -> None:
    """Refuse an output that would write over an input or over another output.

    Paths are compared as files (``file.h5:/dataset`` names ``file.h5``), after
    resolving links. An output is refused when it is an input, lies inside an
    input folder (a model folder, a Zarr store) or contains an input; outputs
    must be pairwise distinct the same way. ``overwrite`` does not lift this:
    replacing an input would destroy the data being read.

    Parameters
    ----------
    outputs, inputs : mapping of str to path
        Label (what the user gave, e.g. ``"--report"``) -> path; None values
        (options not given) are skipped.

    Raises
    ------
    UserInputError
        Naming both paths, for the first clash found.

    Examples
    --------
    >>> refuse_outputs_over_inputs({"output": "out.tif"}, {"input": "in.h5:/raw"})
    >>> refuse_outputs_over_inputs({"--report": "in.tif"}, {"input": "in.tif"})
    Traceback (most recent call last):
    ...
    vemrestore.errors.UserInputError: --report in.tif is the input in.tif (choose another path)
    """
    given_outputs = [(label, path) for label, path in outputs.items() if path is not None]
    given_inputs = [(label, path) for label, path in inputs.items() if path is not None]
    for index, (label, path) in enumerate(given_outputs):
        for other_label, other in given_inputs + given_outputs[:index]:
            clash = _clash(split_dataset_path(path)[0], split_dataset_path(other)[0])
            if clash:
                raise UserInputError(
                    f"{label} {os.fspath(path)} {clash} {other_label} {os.fspath(other)} "
                    "(choose another path)"
                )


def _clash(output: Path, other: Path) -> str | None:
    """How ``output`` would write over ``other`` ("is", "is inside", "contains"), or None."""
    if same_file(output, other):
        return "is the"
    resolved_output, resolved_other = output.resolve(), other.resolve()
    if resolved_output.is_relative_to(resolved_other):
        return "is inside the"
    if resolved_other.is_relative_to(resolved_output):
        return "contains the"
    return None
