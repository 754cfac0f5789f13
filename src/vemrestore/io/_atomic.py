"""Atomic finalisation of outputs: write under a temporary name, rename on success."""

from __future__ import annotations

import errno
import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from vemrestore.errors import UserInputError
from vemrestore.io._common import first_line
from vemrestore.io._paths import check_output_path

__all__ = ["atomic_output", "partial_path", "remove_stale", "storage_error"]

_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})
_NO_ACCESS = frozenset({errno.EACCES, errno.EPERM})
_IN_THE_WAY = frozenset({errno.ENOTDIR, errno.EEXIST, errno.EISDIR, errno.ENOTEMPTY})


def storage_error(
    action: str,
    path: str | os.PathLike[str],
    error: OSError,
    *,
    retry: str = "run the same command again",
) -> UserInputError:
    """A one-line `UserInputError` for an operating-system error while writing ``path``.

    The message reads ``"<action> <path> failed: <reason> (<fix>)"``; the fix
    follows the fault: free space (disk full, quota), a writable location
    (read-only file system, permission denied) or another output path (a
    file or folder in the way).

    Parameters
    ----------
    action : str
        What was being done, e.g. ``"writing checkpoint"``.
    path : str or path-like
        What was being written.
    error : OSError
        The fault.
    retry : str
        How to carry on once space is freed (``"run the same command again"``).

    Returns
    -------
    UserInputError
        To raise ``from error``.

    Examples
    --------
    >>> import errno
    >>> full = OSError(errno.ENOSPC, "No space left on device")
    >>> print(storage_error("writing", "/d/o.tif", full))
    writing /d/o.tif failed: No space left on device (free space, then run the same command again)
    """
    reason = error.strerror or first_line(error)
    where = Path(os.fsdecode(error.filename)) if isinstance(error.filename, str | bytes) else None
    if where is not None and where != Path(path):
        reason = f"{reason}: {where}"
    if error.errno in _FULL:
        fix = f"free space, then {retry}"
    elif error.errno == errno.EROFS:
        fix = "the file system is read-only; choose an output path on a writable one"
    elif error.errno in _NO_ACCESS:
        fix = f"make {(where or Path(path)).parent} writable or choose another output path"
    elif error.errno in _IN_THE_WAY:
        fix = "a file or folder is in the way; choose another output path"
    else:
        fix = f"check the destination, then {retry}"
    return UserInputError(f"{action} {path} failed: {reason} ({fix})")


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
    at ``path``. Leftovers of a killed writer of ``path`` are cleaned up on
    entry: temporaries ``.<name>.partial-<pid>`` of processes that no longer
    run are removed, and the previous output it was swapping out
    (``.<name>.old-<pid>``) is put back if nothing is at ``path``.

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
        missing or not writable, or writing or the final rename fails with an
        operating-system error (disk full, read-only, permission denied, a
        file in the way): one line naming ``path``, the fault and its fix.

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
    _recover_swap(final)
    remove_stale(final.with_name(f".{final.name}.partial-"))
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
            retry = "run the same command again" + (" to resume" if resume else "")
            raise storage_error("writing", final, error, retry=retry) from error
        raise


def remove_stale(prefix: Path) -> None:
    """Delete ``<prefix><pid>`` leftovers of processes that no longer run.

    A killed writer leaves its temporary ``.NAME.partial-<pid>`` behind; the
    next writer of ``NAME`` removes it. Names whose pid is a live process (or
    not a number) are kept.

    Parameters
    ----------
    prefix : pathlib.Path
        The temporary names without the pid, e.g. ``dir/.out.tif.partial-``.
    """
    for path in _stale(prefix):
        _remove(path)


def _stale(prefix: Path) -> list[Path]:
    """``<prefix><pid>`` siblings whose process is gone."""
    try:
        candidates = sorted(prefix.parent.glob(glob.escape(prefix.name) + "*"))
    except OSError:  # no directory to look in: check_output_path reports it
        return []
    tail = len(prefix.name)
    return [p for p in candidates if p.name[tail:].isdigit() and _dead(int(p.name[tail:]))]


def _dead(pid: int) -> bool:
    """Whether no process ``pid`` exists (unsure counts as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):  # exists but is not ours, or not a valid pid
        return False
    return False


def _recover_swap(final: Path) -> None:
    """Finish the swap a killed writer left half-done (see `_finalise`).

    An ``.NAME.old-<pid>`` of a dead process is the previous output: put back
    when nothing is at ``final`` (killed between the two renames), otherwise
    deleted (killed after the new output was in place).
    """
    for old in _stale(final.with_name(f".{final.name}.old-")):
        if final.exists() or final.is_symlink():
            _remove(old)
        else:
            try:
                os.replace(old, final)
            except OSError:  # leave it for the user; check_output_path may still pass
                pass


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
