"""The engine resumes a partial run only from the same input: its signature is in the fingerprint.

The signature holds the input's path, the size and modification time of its
file(s), shape, dtype and a digest of sampled voxels, so an input changed in
place since the run was killed is refused (naming it) instead of mixed into
the output.
"""

import os
import threading

import dask.array as da
import h5py
import numpy as np
import pytest
import zarr

from vemrestore.engine import predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import (
    Volume,
    describe_changes,
    file_signature,
    open_volume,
    volume_signature,
    write_volume,
)
from vemrestore.methods import create_method

BLOCK_SHAPE = (16, 24, 24)  # 16 x 40 x 40 input at factor 4: 4 x 2 x 2 = 16 blocks
CRASH_AFTER = 5


def _crash(method, volume, path, counting):
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_volume(
            counting(method, fail_after=CRASH_AFTER),
            volume,
            path,
            block_shape=BLOCK_SHAPE,
            num_workers=1,
            progress=False,
        )


def _done(path):
    return sorted(
        p.name for p in (path.parent / f".{path.name}.partial/.vemrestore/done").iterdir()
    )


def test_a_zarr_input_changed_in_place_is_refused_naming_it(tmp_path, random_volume, counting):
    src, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_volume(random_volume((16, 40, 40)), src, voxel_size=(40, 10, 10))
    cubic = create_method("cubic", scale_factor=4)
    _crash(cubic, open_volume(src), out, counting)
    done = _done(out)
    array = zarr.open_array(store=str(src), path="0", mode="r+")
    array[:4] = 0  # chunks rewritten; the store's metadata files are untouched

    with pytest.raises(UserInputError) as refused:
        predict_volume(cubic, open_volume(src), out, block_shape=BLOCK_SHAPE, progress=False)
    message = str(refused.value)
    assert f"the input {src.resolve()} changed since that run (content differs)" in message
    assert "overwrite" in message and "\n" not in message
    assert _done(out) == done and not out.exists()

    method = counting(cubic)
    predict_volume(method, open_volume(src), out, block_shape=BLOCK_SHAPE, overwrite=True)
    assert method.calls == 16


def test_the_same_input_resumes(tmp_path, random_volume, counting):
    src, out = tmp_path / "in.zarr", tmp_path / "out.zarr"
    write_volume(random_volume((16, 40, 40)), src, voxel_size=(40, 10, 10))
    cubic = create_method("cubic", scale_factor=4)
    _crash(cubic, open_volume(src), out, counting)
    method = counting(cubic)
    predict_volume(method, open_volume(src), out, block_shape=BLOCK_SHAPE, progress=False)
    assert method.calls == 16 - CRASH_AFTER
    assert zarr.open_group(str(out), mode="r").attrs["vemrestore"]["fingerprint"]["input"][
        "path"
    ] == str(src.resolve())


def test_an_in_memory_input_with_other_voxels_is_refused(tmp_path, random_volume, counting):
    out = tmp_path / "out.zarr"
    cubic = create_method("cubic", scale_factor=4)
    _crash(cubic, Volume(random_volume((16, 40, 40), seed=0)), out, counting)
    with pytest.raises(UserInputError, match=r"the input \(in memory\) changed .*content differs"):
        predict_volume(
            cubic, Volume(random_volume((16, 40, 40), seed=1)), out, block_shape=BLOCK_SHAPE
        )


def test_an_hdf5_file_touched_since_the_run_is_refused(tmp_path, random_volume, counting):
    src, out = tmp_path / "in.h5", tmp_path / "out.zarr"
    with h5py.File(src, "w") as f:
        f["raw"] = random_volume((16, 40, 40))
    cubic = create_method("cubic", scale_factor=4)
    _crash(cubic, open_volume(f"{src}:/raw"), out, counting)
    stat = src.stat()
    os.utime(src, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    with pytest.raises(UserInputError, match=r"in\.h5:/raw changed .*modification time differs"):
        predict_volume(cubic, open_volume(f"{src}:/raw"), out, block_shape=BLOCK_SHAPE)


def test_volume_signature_names_files_shape_dtype_and_content(tmp_path, random_volume):
    src = tmp_path / "in.zarr"
    write_volume(random_volume((4, 8, 8)), src, voxel_size=(40, 10, 10))
    signature = volume_signature(open_volume(src))
    files = [os.path.relpath(f[0], src) for f in signature["files"]]
    assert files == ["zarr.json", os.path.join("0", "zarr.json")]  # the store's metadata
    assert signature["shape"] == [4, 8, 8] and signature["dtype"] == "float32"

    other = volume_signature(Volume(random_volume((4, 8, 8), seed=1)))
    assert other["path"] is None and other["files"] == []
    assert describe_changes({"input": signature}, {"input": other}) == (
        "the input (in memory)",
        f"it was {src.resolve()}",
    )


def test_a_huge_lazy_volume_is_signed_from_a_few_chunks():
    chunks = (16, 512, 512)
    read = []
    lock = threading.Lock()

    def record(chunk, block_info=None):
        with lock:
            read.append(block_info[0]["chunk-location"])
        return chunk

    shape = (256, 4096, 4096)  # 4 GiB of uint8, never read whole
    lazy = da.zeros(shape, dtype=np.uint8, chunks=chunks).map_blocks(record, dtype=np.uint8)
    signature = volume_signature(Volume(lazy))
    assert 1 <= len(read) <= 8  # one chunk per sampled plane
    assert len(set(index[0] for index in read)) == len(read)  # in different planes

    changed = lazy.copy()
    z, y, x = read[0]
    changed[z * 16 : (z + 1) * 16, y * 512 : (y + 1) * 512, x * 512 : (x + 1) * 512] = 1
    assert volume_signature(Volume(changed))["sample_sha256"] != signature["sample_sha256"]


def test_file_signature_digests_the_bytes(tmp_path):
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"a" * 100)
    before = file_signature(weights)
    weights.write_bytes(b"b" * 100)
    stat = weights.stat()
    os.utime(weights, ns=(stat.st_atime_ns, before["files"][0][2]))
    assert file_signature(weights)["files"] == before["files"]
    subject, details = describe_changes({"model": before}, {"model": file_signature(weights)})
    assert subject == f"the model {weights.resolve()}" and details == "content differs"


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            {"config": {"a": 1, "b": 2}},
            {"config": {"a": 1, "b": 3}},
            ("the settings", "config.b: 2 -> 3"),
        ),
        (
            {"state": {"weights": "0" * 64}},
            {"state": {"weights": "1" * 64}},
            ("the settings", "state.weights differs"),
        ),
        ({"x": [1, 2]}, {"x": (1, 2)}, ("", "")),
    ],
)
def test_describe_changes_names_dotted_settings(old, new, expected):
    assert describe_changes(old, new) == expected
