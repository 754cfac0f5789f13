"""Writing is atomic: refused or failed writes leave nothing at the output path."""

from __future__ import annotations

import os

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from vemrestore.errors import UserInputError
from vemrestore.io import (
    Volume,
    _atomic,
    atomic_output,
    open_volume,
    write_ngff_metadata,
    write_volume,
)

VOXEL = (50.0, 4.0, 4.0)
OUTPUTS = ["out.tif", "out.h5", "out.h5:/ds", "out.zarr", "out.mrc"]


def _data(shape=(6, 16, 16)):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape)


def _failing_dask(shape=(6, 16, 16)):
    """A dask volume whose last block raises while it is being written."""

    def block(x, block_info=None):
        if block_info[0]["chunk-location"][0] == 2:
            raise RuntimeError("injected failure")
        return x

    return da.from_array(_data(shape), chunks=(2, 16, 16)).map_blocks(block, dtype=np.float32)


def _assert_empty(directory):
    assert sorted(p.name for p in directory.iterdir()) == []


@pytest.mark.parametrize("name", OUTPUTS)
def test_failure_mid_write_leaves_nothing(tmp_path, name):
    with pytest.raises(RuntimeError, match="injected failure"):
        write_volume(_failing_dask(), tmp_path / name, voxel_size=VOXEL)
    _assert_empty(tmp_path)


def test_failure_in_writer_library_leaves_nothing(tmp_path, monkeypatch):
    def broken_write(self, *args, **kwargs):
        self._fh.write(b"partial bytes")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile.TiffWriter, "write", broken_write)
    with pytest.raises(UserInputError, match=r"writing .*out\.tif failed: .*No space left"):
        write_volume(_data(), tmp_path / "out.tif", voxel_size=VOXEL)
    _assert_empty(tmp_path)


def test_failed_overwrite_keeps_the_old_output(tmp_path):
    path = tmp_path / "out.zarr"
    write_volume(_data(), path, voxel_size=VOXEL)
    with pytest.raises(RuntimeError, match="injected failure"):
        write_volume(_failing_dask(), path, voxel_size=(1, 1, 1), overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.zarr"]
    assert open_volume(path).voxel_size == VOXEL


@pytest.mark.parametrize("name", OUTPUTS)
def test_existing_output_needs_overwrite(tmp_path, name):
    write_volume(_data(), tmp_path / name, voxel_size=VOXEL)
    with pytest.raises(UserInputError, match="exists; pass overwrite=True / --overwrite"):
        write_volume(_data() + 1, tmp_path / name, voxel_size=VOXEL)
    np.testing.assert_array_equal(open_volume(tmp_path / name).to_numpy(), _data())
    write_volume(_data() + 1, tmp_path / name, voxel_size=VOXEL, overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / name).to_numpy(), _data() + 1)
    assert len(list(tmp_path.iterdir())) == 1


@pytest.mark.parametrize("name", ["in.tif", "in.h5:/raw", "in.zarr"])
def test_output_equal_to_input_is_refused(tmp_path, name):
    write_volume(_data(), tmp_path / name, voxel_size=VOXEL)
    volume = open_volume(tmp_path / name)
    target = str(tmp_path / name).replace(":/raw", ":/restored")
    with pytest.raises(UserInputError, match="is the input file"):
        write_volume(volume, target, overwrite=True)
    np.testing.assert_array_equal(open_volume(tmp_path / name).to_numpy(), _data())


def test_missing_output_directory(tmp_path):
    with pytest.raises(UserInputError, match=r"directory .*nowhere does not exist"):
        write_volume(_data(), tmp_path / "nowhere" / "out.tif", voxel_size=VOXEL)
    _assert_empty(tmp_path)


def test_unwritable_output_directory(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.access(locked, os.W_OK):  # root may write anywhere: simulate the permission check
        real_access = os.access
        monkeypatch.setattr(os, "access", lambda p, mode: p != locked and real_access(p, mode))
    try:
        with pytest.raises(UserInputError, match=r"locked is not writable"):
            write_volume(_data(), locked / "out.tif", voxel_size=VOXEL)
    finally:
        locked.chmod(0o700)
    assert list(locked.iterdir()) == []


def test_plain_array_needs_voxel_size(tmp_path):
    with pytest.raises(UserInputError, match=r"pass voxel_size=\(z, y, x\)"):
        write_volume(_data(), tmp_path / "out.tif")


def test_chunks_refused_for_tiff(tmp_path):
    with pytest.raises(UserInputError, match="chunks="):
        write_volume(_data(), tmp_path / "out.tif", voxel_size=VOXEL, chunks=(2, 8, 8))
    _assert_empty(tmp_path)


def test_mrc_refuses_dtypes_it_cannot_store(tmp_path):
    with pytest.raises(UserInputError, match=r"MRC cannot store int32.*pass dtype="):
        write_volume(_data().astype(np.int32), tmp_path / "out.mrc", voxel_size=VOXEL)
    _assert_empty(tmp_path)


def test_zarr_inner_path_refused(tmp_path):
    with pytest.raises(UserInputError, match="only supported for HDF5"):
        write_volume(_data(), tmp_path / "out.zarr:/raw", voxel_size=VOXEL)


def test_atomic_output_directory(tmp_path):
    final = tmp_path / "blocks.zarr"
    with atomic_output(final) as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".blocks.zarr.partial-")
        group = zarr.open_group(tmp, mode="w")
        level = group.create_array("0", shape=(4, 8, 8), dtype="u2", chunks=(2, 8, 8))
        for z in range(0, 4, 2):
            level[z : z + 2] = z
        assert not final.exists()
        write_ngff_metadata(group, VOXEL, name="blocks")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocks.zarr"]
    volume = open_volume(final)
    assert volume.voxel_size == VOXEL
    assert volume.to_numpy()[3].max() == 2


def test_atomic_output_overwrites_a_directory_only_when_complete(tmp_path):
    final = tmp_path / "out"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_output(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
        assert (final / "old.txt").exists()
        raise RuntimeError("stop")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (final / "old.txt").read_text() == "old"
    with atomic_output(final, overwrite=True) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_output_resume_keeps_partial_output(tmp_path):
    final = tmp_path / "out.zarr"
    with pytest.raises(KeyboardInterrupt), atomic_output(final, resume=True) as tmp:
        tmp.mkdir()
        (tmp / "block-0").write_text("done")
        raise KeyboardInterrupt
    assert tmp == _atomic.partial_path(final, resume=True) and (tmp / "block-0").exists()
    with atomic_output(final, resume=True) as again:
        assert again == tmp and (again / "block-0").exists()
        (again / "block-1").write_text("done")
    assert sorted(p.name for p in final.iterdir()) == ["block-0", "block-1"]
    assert not tmp.exists()


def test_write_ngff_metadata_needs_the_array():
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    with pytest.raises(ValueError, match="write the data first"):
        write_ngff_metadata(group, VOXEL)


def test_volume_source_string_without_file_is_fine(tmp_path):
    volume = Volume(_data(), voxel_size=VOXEL, source="synthetic")
    assert write_volume(volume, tmp_path / "out.tif").exists()
