"""Storage faults while writing blocks or finalising an output: a one-line user error,
finished blocks kept, and a re-run that completes the output identically."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import tifffile
import zarr
from typer.testing import CliRunner

from vemrestore.cli import app
from vemrestore.engine import predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, open_volume
from vemrestore.methods import create_method

BLOCK_SHAPE = (16, 24, 24)  # 64 x 40 x 40 output -> 4 x 2 x 2 = 16 blocks
NUM_BLOCKS = 16
WRITTEN = 5  # blocks written before the disk fills up
FULL = OSError(errno.ENOSPC, "No space left on device")
READ_ONLY = OSError(errno.EROFS, "Read-only file system")


def _read(path):
    return zarr.open_array(store=str(path), path="0", mode="r")[:]


def _fill_disk_after(monkeypatch, writes: int) -> None:
    """Zarr array writes raise ENOSPC once ``writes`` of them have succeeded."""
    real = zarr.Array.__setitem__
    done = []

    def setitem(self, key, value):
        if len(done) >= writes:
            raise FULL
        real(self, key, value)
        done.append(key)

    monkeypatch.setattr(zarr.Array, "__setitem__", setitem)


@pytest.fixture
def volume(random_volume):
    return Volume(random_volume((16, 40, 40)), voxel_size=(40.0, 10.0, 10.0), source="test")


def _predict(path, volume, method=None, **options):
    method = method or create_method("cubic", scale_factor=4)
    return predict_volume(
        method, volume, path, block_shape=BLOCK_SHAPE, num_workers=1, progress=False, **options
    )


def test_disk_full_mid_run_keeps_finished_blocks_and_resumes(tmp_path, volume, counting):
    reference = _predict(tmp_path / "reference.zarr", volume)
    path = tmp_path / "out.zarr"
    partial = tmp_path / ".out.zarr.partial"
    with pytest.MonkeyPatch.context() as patch:
        _fill_disk_after(patch, WRITTEN)
        with pytest.raises(UserInputError) as caught:
            _predict(path, volume)
    message = str(caught.value)
    assert "\n" not in message and f"writing {path} failed: No space left on device" in message
    assert message.endswith("(free space, then run the same command again to resume)")
    assert not path.exists()
    done = sorted(p.name for p in (partial / ".vemrestore" / "done").iterdir())
    assert len(done) == WRITTEN
    finished = _read(partial)
    expected = _read(reference)
    for block_id in done:
        z, y, x = (int(i) for i in block_id.split("_"))
        region = tuple(
            slice(i * n, (i + 1) * n) for i, n in zip((z, y, x), BLOCK_SHAPE, strict=True)
        )
        np.testing.assert_array_equal(finished[region], expected[region])

    method = counting(create_method("cubic", scale_factor=4))
    _predict(path, volume, method)
    assert method.calls == NUM_BLOCKS - WRITTEN
    assert not partial.exists()
    np.testing.assert_array_equal(_read(path), expected)


def _rename_fails_once(fail_replace_to, monkeypatch, tmp_path, volume):
    """Run into ``out.zarr`` with its final rename failing (read-only), then undo the fault."""
    path = tmp_path / "out.zarr"
    fail_replace_to(path, READ_ONLY)
    with pytest.raises(
        UserInputError, match=r"out\.zarr failed: Read-only file system \("
    ) as caught:
        _predict(path, volume)
    monkeypatch.undo()
    assert "\n" not in str(caught.value)
    return path


def test_read_only_final_rename_keeps_the_partial(fail_replace_to, monkeypatch, tmp_path, volume):
    path = _rename_fails_once(fail_replace_to, monkeypatch, tmp_path, volume)
    assert not path.exists() and (tmp_path / ".out.zarr.partial").is_dir()


def test_after_a_failed_final_rename_the_next_run_finishes(
    fail_replace_to, monkeypatch, tmp_path, volume, counting
):
    path = _rename_fails_once(fail_replace_to, monkeypatch, tmp_path, volume)
    method = counting(create_method("cubic", scale_factor=4))
    _predict(path, volume, method)
    assert method.calls == 0  # every block was finished: only the rename was left
    reference = _predict(tmp_path / "reference.zarr", volume)
    np.testing.assert_array_equal(_read(path), _read(reference))


@pytest.mark.parametrize("fault", ["write", "rename"])
def test_in_memory_output_fault_leaves_nothing(
    fail_replace_to, tmp_path, volume, monkeypatch, fault
):
    path = tmp_path / "out.tif"
    if fault == "write":
        monkeypatch.setattr(
            tifffile.TiffWriter, "write", lambda *a, **k: (_ for _ in ()).throw(FULL)
        )
    else:
        fail_replace_to(path, READ_ONLY)
    with pytest.raises(UserInputError, match=rf"writing {path} failed: "):
        _predict(path, volume)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    _predict(path, volume)
    assert open_volume(path).shape == (64, 40, 40)


def test_cli_disk_full_is_one_error_line_and_exit_2(tmp_path, volume, monkeypatch):
    src = tmp_path / "in.tif"
    metadata = {"spacing": 40, "unit": "nm", "axes": "ZYX"}
    tifffile.imwrite(src, (volume.data * 200).astype(np.uint8), imagej=True, metadata=metadata)
    out = tmp_path / "out.zarr"
    _fill_disk_after(monkeypatch, 1)
    args = ["iso", str(src), str(out), "--factor", "4", "--method", "cubic"]
    result = CliRunner().invoke(app, [*args, "--block", *map(str, BLOCK_SHAPE)])
    assert result.exit_code == 2, (result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: writing "), result.stderr
    assert "No space left on device" in lines[0] and "free space" in lines[0]
    assert not out.exists()
