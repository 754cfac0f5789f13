"""Resume is safe by construction and one process writes an output at a time.

A killed command resumes only if its input, method, options and weights are
unchanged (refused otherwise, naming what changed), whether or not it trained;
a second process writing the same output is refused at once with the first
one's pid; a lock left by a killed process is taken over; a finished run
leaves nothing beside its output.
"""

import errno
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tifffile
import zarr
from filelock import FileLock
from typer.testing import CliRunner

from vemrestore import api
from vemrestore.api._lock import lock_path, run_lock
from vemrestore.api._run import finish_run, input_signature, start_run
from vemrestore.bench import em_phantom
from vemrestore.cli import app
from vemrestore.engine import _predict
from vemrestore.errors import UserInputError
from vemrestore.io import open_volume, write_volume

BLOCK = (16, 16, 16)  # 12 x 32 x 32 at factor 4 -> 48 x 32 x 32: 12 blocks
CRASH_AFTER = 3
TINY_SKELETON = {
    "base_channels": 4,
    "depth": 2,
    "train": {"num_steps": 2, "batch_size": 2, "patch_size": 16},
    "from_scratch": True,
}


def _write_tif(path, seed):
    sections = em_phantom((12, 32, 32), num_cells=8, rng=seed)
    tifffile.imwrite(path, sections, imagej=True, metadata={"spacing": 32, "axes": "ZYX"})


@pytest.fixture
def thick_tif(tmp_path):
    path = tmp_path / "thick.tif"
    _write_tif(path, seed=2)
    return path


@pytest.fixture
def crash_engine(monkeypatch):
    """Make the engine raise after CRASH_AFTER blocks were written (a simulated kill).

    Returns a function that restores the engine once the blocks still being
    written by other threads when the error came are done (the engine's
    threads outlive its error).
    """
    write = _predict._ZarrSink.write
    state = {"blocks": 0, "writing": 0}
    settled = threading.Condition()

    def crashing(self, block, outputs):
        with settled:
            if state["blocks"] >= CRASH_AFTER:
                raise RuntimeError("simulated kill")
            state["blocks"] += 1
            state["writing"] += 1
        try:
            write(self, block, outputs)
        finally:
            with settled:
                state["writing"] -= 1
                settled.notify_all()

    def restore():
        with settled:
            settled.wait_for(lambda: state["writing"] == 0, timeout=30)
        monkeypatch.undo()

    monkeypatch.setattr(_predict._ZarrSink, "write", crashing)
    return restore


def _leftovers(out):
    names = (f".{out.name}.run", f".{out.name}.lock", f".{out.name}.partial")
    return [name for name in names if (out.parent / name).exists()]


def _done_blocks(out):
    return sorted(p.name for p in (out.parent / f".{out.name}.partial/.vemrestore/done").iterdir())


@pytest.mark.parametrize(
    ("method", "options"),
    [("cubic", {}), ("skeleton", TINY_SKELETON)],
    ids=["without-training", "with-training"],
)
def test_input_changed_after_a_kill_is_refused_naming_it(
    thick_tif, tmp_path, crash_engine, method, options
):
    out = tmp_path / "iso.zarr"

    def iso(**kwargs):
        return api.iso(
            str(thick_tif),
            str(out),
            factor=4,
            method=method,
            block_shape=BLOCK,
            **options,
            **kwargs,
        )

    with pytest.raises(RuntimeError, match="simulated kill"):
        iso()
    crash_engine()
    done = _done_blocks(out)
    assert done and not out.exists()
    _write_tif(thick_tif, seed=3)  # changed in place: same name, shape and dtype

    with pytest.raises(UserInputError) as refused:
        iso()
    message = str(refused.value)
    assert "\n" not in message
    assert f"the input {thick_tif} changed since the interrupted run of {out}" in message
    assert message.endswith("pass --overwrite to start afresh")
    assert _done_blocks(out) == done and not out.exists()  # nothing of the old run lost

    iso(overwrite=True)
    fresh = tmp_path / "fresh.zarr"
    api.iso(str(thick_tif), str(fresh), factor=4, method="cubic", block_shape=BLOCK)
    if method == "cubic":  # the restoration holds only blocks of the new input
        np.testing.assert_array_equal(open_volume(out).data, open_volume(fresh).data)
    assert _leftovers(out) == [] and _leftovers(fresh) == []


def test_a_zarr_input_rewritten_in_place_is_refused(tmp_path, crash_engine):
    """Chunk files change, the store's metadata does not: the content digest tells."""
    src = tmp_path / "in.zarr"
    write_volume(em_phantom((12, 32, 32), num_cells=8, rng=2), src, voxel_size=(32, 8, 8))
    out = tmp_path / "iso.zarr"
    with pytest.raises(RuntimeError, match="simulated kill"):
        api.iso(str(src), str(out), factor=4, block_shape=BLOCK)
    crash_engine()
    array = zarr.open_array(store=str(src), path="0", mode="r+")
    array[:] = 255 - array[:]

    with pytest.raises(
        UserInputError, match=rf"the input {src}\S* changed since .*content differs"
    ):
        api.iso(str(src), str(out), factor=4, block_shape=BLOCK)
    assert not out.exists()


def test_the_record_holds_the_volume_signature(thick_tif, tmp_path):
    """A record built from the opened volume tells content apart even with the same file times."""
    out = str(tmp_path / "out.zarr")
    stat = thick_tif.stat()

    def record():
        return {"command": "iso", "input": input_signature(open_volume(str(thick_tif)))}

    start_run(out, [out], record(), overwrite=False)  # a run that got as far as a partial
    (tmp_path / ".out.zarr.partial").mkdir()
    _write_tif(thick_tif, seed=3)
    os.utime(thick_tif, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    with pytest.raises(
        UserInputError, match=r"the input .*thick\.tif changed .*\(content differs\)"
    ):
        start_run(out, [out], record(), overwrite=False)


def test_other_settings_after_a_kill_are_refused_naming_them(thick_tif, tmp_path, crash_engine):
    out = tmp_path / "iso.zarr"
    with pytest.raises(RuntimeError, match="simulated kill"):
        api.iso(str(thick_tif), str(out), factor=4, method="cubic", block_shape=BLOCK)
    crash_engine()
    with pytest.raises(
        UserInputError, match=r"the method settings changed .*scale_factor: 4.0 -> 2.0"
    ):
        api.iso(str(thick_tif), str(out), factor=2, method="cubic", block_shape=BLOCK)


def _hold_lock_in_another_process(dst):
    """A process that holds the lock of ``dst`` as a writer does (pid inside); returns it."""
    code = (
        "import filelock, os, sys, time\n"
        "lock = filelock.FileLock(sys.argv[1], timeout=0)\n"
        "lock.acquire()\n"
        "open(sys.argv[1], 'w').write(f'{os.getpid()}\\n')\n"
        "print('locked', flush=True)\n"
        "time.sleep(60)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(lock_path(dst))], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_second_writer_is_refused_with_the_pid(thick_tif, tmp_path):
    out = tmp_path / "iso.zarr"
    holder = _hold_lock_in_another_process(out)
    try:
        with pytest.raises(UserInputError) as refused:
            api.iso(str(thick_tif), str(out), factor=4, method="linear", block_shape=BLOCK)
        assert str(refused.value) == (
            f"another vemrestore process is writing {out} (pid {holder.pid}); "
            "wait for it or stop it"
        )
        assert _leftovers(out) == [".iso.zarr.lock"] and not out.exists()  # the holder's only

        result = CliRunner().invoke(app, ["iso", str(thick_tif), str(out), "--factor", "4"])
        assert result.exit_code == 2
        assert result.stderr.strip().splitlines()[-1].startswith("error: another vemrestore")
        assert f"(pid {holder.pid})" in result.stderr and "Traceback" not in result.output
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_left_by_a_killed_process_is_taken_over(thick_tif, tmp_path):
    out = tmp_path / "iso.zarr"
    holder = _hold_lock_in_another_process(out)
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    assert lock_path(out).exists()

    api.iso(str(thick_tif), str(out), factor=4, method="linear", block_shape=BLOCK)
    assert out.exists() and _leftovers(out) == []


def test_a_finished_run_leaves_nothing_beside_its_output(thick_tif, tmp_path):
    out = tmp_path / "iso.tif"
    api.iso(str(thick_tif), str(out), factor=4, method="linear")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["iso.tif", "thick.tif"]


def test_another_thread_is_refused_and_nested_holds_release_once(tmp_path):
    out = str(tmp_path / "out.zarr")
    refused = []

    def second_writer():
        try:
            with run_lock(out):
                pass
        except UserInputError as error:
            refused.append(str(error))

    with run_lock(out):
        start_run(out, [out], {"command": "test"}, overwrite=False)
        thread = threading.Thread(target=second_writer)
        thread.start()
        thread.join()
        finish_run(out)
        assert lock_path(out).exists()  # still held by the block
    assert refused and f"(pid {os.getpid()})" in refused[0]
    assert not lock_path(out).exists()
    with run_lock(out):  # free again
        pass


def test_a_missing_output_folder_is_one_line(tmp_path):
    out = tmp_path / "nope" / "out.zarr"
    with pytest.raises(UserInputError, match=r"directory .*nope does not exist"):
        start_run(str(out), [str(out)], {"command": "test"}, overwrite=False)


def test_a_run_left_unfinished_by_an_ended_thread_does_not_block(tmp_path):
    out = str(tmp_path / "out.zarr")
    thread = threading.Thread(
        target=lambda: start_run(out, [out], {"command": "test"}, overwrite=False)
    )
    thread.start()
    thread.join()  # started, never finished (its command failed)
    assert lock_path(out).exists()
    start_run(out, [out], {"command": "test"}, overwrite=False)  # resumes in this thread
    finish_run(out)
    assert _leftovers(tmp_path / "out.zarr") == []


def test_a_lock_that_cannot_be_created_is_one_line(tmp_path, monkeypatch):
    out = tmp_path / "out.zarr"
    full = OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(FileLock, "acquire", lambda *a, **k: (_ for _ in ()).throw(full))
    with pytest.raises(UserInputError, match=r"locking .*\.out\.zarr\.lock failed: No space left"):
        start_run(str(out), [str(out)], {"command": "test"}, overwrite=False)
    assert list(tmp_path.iterdir()) == []
