"""Storage faults while writing an output, and leftovers of a killed writer."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest

from vemrestore.errors import UserInputError
from vemrestore.io import atomic_output, open_volume, write_volume
from vemrestore.io._atomic import storage_error

VOXEL = (50.0, 4.0, 4.0)
DEAD_PID = 99_999_999  # above any pid_max: never a live process


def _data(shape=(4, 8, 8)):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


@pytest.mark.parametrize(
    ("code", "reason", "fix"),
    [
        (errno.ENOSPC, "No space left on device", "free space, then run the same command again"),
        (errno.EDQUOT, "Disk quota exceeded", "free space, then run the same command again"),
        (errno.EROFS, "Read-only file system", "choose an output path on a writable one"),
        (errno.EACCES, "Permission denied", "make /data writable or choose another output path"),
        (errno.ENOTDIR, "Not a directory", "in the way; choose another output path"),
        (errno.EEXIST, "File exists", "in the way; choose another output path"),
        (errno.EIO, "Input/output error", "check the destination, then run the same command"),
    ],
)
def test_storage_error_is_one_line_with_a_fix(code, reason, fix):
    error = storage_error("writing", "/data/out.tif", OSError(code, reason))
    message = str(error)
    assert isinstance(error, UserInputError) and "\n" not in message
    assert message.startswith(f"writing /data/out.tif failed: {reason} (")
    assert fix in message and message.endswith(")")


def test_storage_error_names_the_file_that_failed_when_it_differs():
    error = OSError(errno.ENOSPC, "No space left on device", "/data/.out.zarr.partial/0/c/1")
    message = str(storage_error("writing", "/data/out.zarr", error, retry="retry to resume"))
    assert "failed: No space left on device: /data/.out.zarr.partial/0/c/1 (" in message
    assert message.endswith("(free space, then retry to resume)")


@pytest.mark.parametrize("name", ["out.tif", "out.zarr"])
def test_read_only_final_rename_leaves_nothing(fail_replace_to, tmp_path, monkeypatch, name):
    final = tmp_path / name
    fail_replace_to(final, OSError(errno.EROFS, "Read-only file system"))
    with pytest.raises(UserInputError, match=rf"writing .*{name} failed: Read-only file system"):
        write_volume(_data(), final, voxel_size=VOXEL)
    assert list(tmp_path.iterdir()) == []  # nothing at the final path, the temporary removed


def test_failed_rename_of_a_resumable_output_keeps_the_partial(
    fail_replace_to, tmp_path, monkeypatch
):
    final = tmp_path / "blocks.zarr"
    fail_replace_to(final, OSError(errno.EROFS, "Read-only file system"))
    with pytest.raises(UserInputError, match="Read-only") as caught:
        with atomic_output(final, resume=True) as partial:
            partial.mkdir()
            (partial / "block").write_text("finished")
    assert "\n" not in str(caught.value)
    assert not final.exists()
    assert (tmp_path / ".blocks.zarr.partial" / "block").read_text() == "finished"
    monkeypatch.undo()
    with atomic_output(final, resume=True) as partial:
        assert (partial / "block").read_text() == "finished"
    assert (final / "block").read_text() == "finished"


def test_disk_full_in_a_resumable_output_advises_resuming(tmp_path):
    with pytest.raises(UserInputError, match=r"free space, then run the same command again to"):
        with atomic_output(tmp_path / "out.zarr", resume=True):
            raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("kind", ["file", "folder"])
def test_stale_partial_of_a_dead_writer_is_removed_a_live_one_kept(tmp_path, kind):
    dead = tmp_path / f".out.tif.partial-{DEAD_PID}"
    live = tmp_path / f".out.tif.partial-{os.getppid()}"
    odd = tmp_path / ".out.tif.partial-notapid"
    other = tmp_path / f".other.tif.partial-{DEAD_PID}"
    for path in (dead, live, odd, other):
        if kind == "file":
            path.write_bytes(b"240 MB of a killed write")
        else:
            (path / "0").mkdir(parents=True)
    write_volume(_data(), tmp_path / "out.tif", voxel_size=VOXEL)
    assert not dead.exists()
    assert live.exists() and odd.exists() and other.exists()
    np.testing.assert_array_equal(open_volume(tmp_path / "out.tif").to_numpy(), _data())


def test_stale_partial_is_removed_even_when_the_write_is_refused(tmp_path):
    write_volume(_data(), tmp_path / "out.tif", voxel_size=VOXEL)
    dead = tmp_path / f".out.tif.partial-{DEAD_PID}"
    dead.write_bytes(b"leftover")
    with pytest.raises(UserInputError, match="exists"):
        write_volume(_data(), tmp_path / "out.tif", voxel_size=VOXEL)
    assert not dead.exists()


def test_killed_swap_puts_the_previous_output_back(tmp_path):
    # Killed between moving the old output aside and moving the new one in.
    write_volume(_data(), tmp_path / "out.zarr", voxel_size=VOXEL)
    old = tmp_path / f".out.zarr.old-{DEAD_PID}"
    os.replace(tmp_path / "out.zarr", old)
    with pytest.raises(UserInputError, match="exists; pass overwrite"):
        write_volume(_data() + 1, tmp_path / "out.zarr", voxel_size=VOXEL)
    assert not old.exists()
    np.testing.assert_array_equal(open_volume(tmp_path / "out.zarr").to_numpy(), _data())


def test_leftover_of_a_finished_swap_is_removed(tmp_path):
    # Killed after the new output was in place, before the old one was deleted.
    write_volume(_data(), tmp_path / "out.zarr", voxel_size=VOXEL)
    old = tmp_path / f".out.zarr.old-{DEAD_PID}"
    live = tmp_path / f".out.zarr.old-{os.getppid()}"
    (old / "0").mkdir(parents=True)
    (live / "0").mkdir(parents=True)
    write_volume(_data() + 1, tmp_path / "out.zarr", voxel_size=VOXEL, overwrite=True)
    assert not old.exists() and live.exists()
    np.testing.assert_array_equal(open_volume(tmp_path / "out.zarr").to_numpy(), _data() + 1)


def test_output_below_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("a file, not a folder")
    with pytest.raises(UserInputError, match="results"):
        write_volume(_data(), blocker / "out.tif", voxel_size=VOXEL)
    assert blocker.read_text() == "a file, not a folder"
