"""One writer per output: an operating-system lock beside the output while a command writes it.

``.NAME.lock`` beside ``NAME`` is locked (``filelock``: ``flock`` on Unix,
``LockFileEx`` on Windows) by the command writing ``NAME``, which writes its
process id into it for the message another process gets. The lock is never
waited for: a second writer is refused at once. The operating system drops
the lock with its process, so a lock file left by a killed command is simply
taken over; the file is removed when the command ends.

`run_lock` holds it for a block; `acquire_run_lock` / `release_run_lock` hold
it between `start_run` and `finish_run` (and inside a `run_lock` block they
only mark the run, so the lock is released once, when the block ends).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock, Timeout

from vemrestore.errors import UserInputError
from vemrestore.io import check_output_path, split_dataset_path, storage_error

__all__ = ["acquire_run_lock", "lock_path", "release_run_lock", "run_lock"]


@dataclass
class _Hold:
    """A lock this process holds: by which thread, for how many blocks, for a started run."""

    lock: FileLock
    path: Path
    thread: int
    blocks: int = 0
    started: bool = False


_holds: dict[Path, _Hold] = {}
_registry = threading.Lock()


def lock_path(dst: str | os.PathLike[str]) -> Path:
    """``.NAME.lock`` beside the output ``NAME`` (an HDF5 ``f.h5:/ds`` locks ``f.h5``)."""
    path = split_dataset_path(dst)[0]
    return path.with_name(f".{path.name}.lock")


@contextmanager
def run_lock(dst: str | os.PathLike[str]) -> Iterator[None]:
    """Hold the write lock of the output ``dst`` for the block; remove the lock file after.

    Raises
    ------
    UserInputError
        If another process (or another thread of this one) is writing ``dst``,
        or its directory is missing or not writable.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out.zarr"
    >>> with run_lock(out):
    ...     lock_path(out).exists()
    True
    >>> lock_path(out).exists()
    False
    """
    hold = _acquire(dst)
    hold.blocks += 1
    try:
        yield
    finally:
        with _registry:
            hold.blocks -= 1
            if hold.blocks == 0:
                hold.started = False
                _release(hold)


def acquire_run_lock(dst: str | os.PathLike[str]) -> None:
    """Take the write lock of ``dst`` for a run until `release_run_lock` (kept if already held).

    Raises
    ------
    UserInputError
        As `run_lock`.
    """
    _acquire(dst).started = True


def release_run_lock(dst: str | os.PathLike[str]) -> None:
    """End the run `acquire_run_lock` began; the lock goes unless a `run_lock` block holds it."""
    with _registry:
        hold = _holds.get(_key(dst))
        if hold is None or hold.thread != threading.get_ident():
            return
        hold.started = False
        if hold.blocks == 0:
            _release(hold)


def _key(dst: str | os.PathLike[str]) -> Path:
    return lock_path(dst).absolute()


def _acquire(dst: str | os.PathLike[str]) -> _Hold:
    """This thread's hold on the lock of ``dst``, taking the lock if it is not held yet."""
    key = _key(dst)
    with _registry:
        hold = _holds.get(key)
        if hold is not None:
            if hold.thread != threading.get_ident() and _alive(hold.thread):
                raise _busy(dst, os.getpid())
            hold.thread = threading.get_ident()  # a run of a thread that ended is over
            return hold
        check_output_path(split_dataset_path(dst)[0], overwrite=True)  # its directory is usable
        holder = _holder(key)
        lock = FileLock(key, timeout=0, thread_local=False)
        try:
            lock.acquire()
        except Timeout:
            raise _busy(dst, _holder(key) or holder) from None
        except OSError as error:
            raise storage_error("locking", key, error) from error
        _write_pid(key)
        hold = _holds[key] = _Hold(lock, key, threading.get_ident())
        return hold


def _alive(thread: int) -> bool:
    return any(t.ident == thread for t in threading.enumerate())


def _release(hold: _Hold) -> None:
    """Remove the lock file while still holding it, then unlock (call with ``_registry`` held)."""
    try:
        hold.path.unlink(missing_ok=True)
    except OSError:
        pass  # a lock file left behind is taken over by the next run
    finally:
        _holds.pop(hold.path, None)
        hold.lock.release(force=True)


def _write_pid(path: Path) -> None:
    """Write this process's id into the lock file, for the message a second writer gets."""
    try:
        path.write_text(f"{os.getpid()}\n")
    except OSError:
        pass  # only the message loses the pid (e.g. a full disk)


def _holder(path: Path) -> int | None:
    """The process id the holder wrote into the lock file, if readable."""
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def _busy(dst: str | os.PathLike[str], pid: int | None) -> UserInputError:
    who = "" if pid is None else f" (pid {pid})"
    return UserInputError(
        f"another vemrestore process is writing {dst}{who}; wait for it or stop it"
    )
