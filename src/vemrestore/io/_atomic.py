"""Atomic finalisation of outputs: write under a temporary name, rename on success."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vemrestore.errors import UserInputError
from vemrestore.io._common import first_line
from vemrestore.io._paths import check_output_path

__all__ = ["atomic_output", "partial_path"]


def partial_path(path: str | os.PathLike[str], *, resume: bool = False) -> Path:
    """The temporary name `atomic_output` uses for ``path``.

    ``.<name>.partial-<pid>`` in the same directory, or ``.<name>.partial``
    (stable across runs) when ``resume`` is True.
    """
    final = Path(path)
    suffix = "" if resume else f"-{os.getpid()}"
    return final.with_name(f".{final.name}.partial{suffix}")


@contextmanager
def atomic_output(
    path: str | os.PathLike[str], *, overwrite: bool = False, resume: bool = False
) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it to ``path`` when the block succeeds.

    Works for files and directories (Zarr stores). An existing output is
    replaced only after the new one is complete, and only when ``overwrite``
    is True. If the block raises, the temporary is removed and nothing appears
    at ``path``.

    Parameters
    ----------
    path : str or path-like
        The final output (file or directory).
    overwrite : bool
        Replace an existing output.
    resume : bool
        Use the stable temporary name ``.<name>.partial``, keep an existing
        one (so a blockwise writer can continue it) and keep it when the block
        fails, for the next attempt.

    Yields
    ------
    pathlib.Path
        Where to write. Nothing exists there yet unless ``resume`` found a
        partial output.

    Raises
    ------
    UserInputError
        When the output exists and ``overwrite`` is False, its directory is
        missing or not writable, or writing fails with an operating-system
        error (disk full, permission denied).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "result.txt"
    >>> with atomic_output(out) as tmp:
    ...     _ = tmp.write_text("done")
    >>> out.read_text()
    'done'
    """
    final = Path(path)
    check_output_path(final, overwrite=overwrite)
    tmp = partial_path(final, resume=resume)
    if not resume:
        _remove(tmp)
    try:
        yield tmp
        _finalise(tmp, final, overwrite=overwrite)
    except BaseException as error:
        if not resume:
            _remove(tmp)
        if isinstance(error, OSError):
            raise UserInputError(f"writing {final} failed: {first_line(error)}") from error
        raise


def _finalise(tmp: Path, final: Path, *, overwrite: bool) -> None:
    """Move ``tmp`` to ``final``; an old ``final`` is deleted only once the new one is in place."""
    if not (tmp.exists() or tmp.is_symlink()):
        raise RuntimeError(f"nothing was written to the temporary output {tmp}")
    exists = final.exists() or final.is_symlink()
    if exists and not overwrite:  # appeared while we were writing
        raise UserInputError(f"{final} exists; pass overwrite=True / --overwrite to replace it")
    if not exists or (final.is_file() and tmp.is_file()):
        os.replace(tmp, final)  # atomic, also over an existing file
        return
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    os.replace(final, old)
    try:
        os.replace(tmp, final)
    except BaseException:
        os.replace(old, final)
        raise
    _remove(old)


def _remove(path: Path) -> None:
    """Delete a file, link or directory tree if present (best-effort cleanup, errors ignored)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            path.unlink(missing_ok=True)
        except OSError:
            pass
