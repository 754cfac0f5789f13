"""Blockwise prediction equals whole-array prediction; lazy reads; outputs and errors."""

import itertools
import threading

import dask.array as da
import numpy as np
import pytest
import zarr

import vemrestore.engine._predict as engine_predict
from vemrestore import io
from vemrestore.engine import block_grid, predict_array, predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, volume_signature
from vemrestore.methods import create_method


def read_zarr(path):
    return zarr.open_array(store=str(path), path="0", mode="r")


def test_cubic_blockwise_zarr_equals_whole_array(tmp_path, random_volume):
    x = random_volume((40, 70, 90))
    method = create_method("cubic", scale_factor=4)
    out = predict_volume(
        method,
        Volume(x, voxel_size=(40.0, 10.0, 10.0)),
        tmp_path / "out.zarr",
        block_shape=(32, 32, 48),
        progress=False,
    )
    assert out == tmp_path / "out.zarr"
    assert not (tmp_path / ".out.zarr.partial").exists()
    result = read_zarr(out)
    assert result.shape == (160, 70, 90)
    assert result.chunks == (32, 32, 48)
    assert result.dtype == np.float32
    np.testing.assert_allclose(result[:], predict_array(method, x), rtol=0, atol=1e-4)
    opened = io.open_volume(out)  # OME-Zarr metadata
    assert opened.voxel_size == (10.0, 10.0, 10.0)
    assert opened.shape == (160, 70, 90)


def test_box_filter_blockwise_equals_whole_array_only_with_its_halo(
    tmp_path, random_volume, box_filter
):
    x = random_volume((6, 50, 60))
    volume = Volume(x)
    expected = predict_array(box_filter(halo=2), x)
    good = predict_volume(
        box_filter(halo=2), volume, tmp_path / "good.zarr", block_shape=(4, 16, 24), progress=False
    )
    assert np.abs(read_zarr(good)[:] - expected).max() < 1e-6
    # Control: a halo smaller than the kernel radius leaves seams at block edges.
    bad = predict_volume(
        box_filter(halo=1), volume, tmp_path / "bad.zarr", block_shape=(4, 16, 24), progress=False
    )
    assert np.abs(read_zarr(bad)[:] - expected).max() > 1e-3


def test_reads_only_the_chunks_each_block_needs(tmp_path, random_volume):
    x = random_volume((24, 32, 32))
    chunks = (4, 16, 16)
    loaded = []
    lock = threading.Lock()

    def record(chunk, block_info=None):
        with lock:
            loaded.append(tuple(tuple(r) for r in block_info[0]["array-location"]))
        return chunk

    lazy = da.from_array(x, chunks=chunks).map_blocks(record, dtype=np.float32)
    # The run's input signature reads a bounded sample first (here, all of the small volume).
    volume_signature(Volume(lazy))
    signature_reads = list(loaded)
    loaded.clear()
    method = create_method("linear", scale_factor=4)
    block_shape = (16, 16, 32)
    predict_volume(
        method, Volume(lazy), tmp_path / "out.zarr", block_shape=block_shape, progress=False
    )
    # Expected reads: for each block, once each input chunk its input region overlaps.
    expected = []
    for block in block_grid(method.output_shape(x.shape), block_shape):
        region = method.input_region(block.region, x.shape)
        indices = [
            range(s.start // c, (s.stop - 1) // c + 1) for s, c in zip(region, chunks, strict=True)
        ]
        expected += [
            tuple(
                (i * c, min((i + 1) * c, n)) for i, c, n in zip(index, chunks, x.shape, strict=True)
            )
            for index in itertools.product(*indices)
        ]
    assert sorted(loaded) == sorted(expected + signature_reads)


def test_progress_bar_counts_blocks(tmp_path, random_volume, box_filter, capsys):
    volume = Volume(random_volume((4, 16, 16)))
    predict_volume(box_filter(), volume, tmp_path / "o.zarr", block_shape=(2, 8, 16))
    assert "4/4" in capsys.readouterr().out


def test_small_tif_output(tmp_path, random_volume):
    x = random_volume((8, 20, 24))
    method = create_method("cubic", scale_factor=2)
    out = predict_volume(
        method,
        Volume(x, voxel_size=(20.0, 5.0, 5.0)),
        tmp_path / "out.tif",
        block_shape=(8, 16, 16),
        progress=False,
    )
    result = io.open_volume(out)
    np.testing.assert_allclose(np.asarray(result.data), predict_array(method, x), atol=1e-4)
    np.testing.assert_allclose(result.voxel_size, (10.0, 5.0, 5.0))


def test_non_zarr_output_too_large_is_refused(tmp_path, random_volume, box_filter, monkeypatch):
    monkeypatch.setattr(engine_predict, "MAX_IN_MEMORY_BYTES", 1000)
    with pytest.raises(UserInputError, match=r"\.zarr"):
        predict_volume(
            box_filter(), Volume(random_volume((4, 16, 16))), tmp_path / "out.tif", progress=False
        )
    assert not list(tmp_path.iterdir())


def test_existing_output_needs_overwrite(tmp_path, random_volume, box_filter):
    path = tmp_path / "out.zarr"
    volume = Volume(random_volume((4, 16, 16)))
    predict_volume(box_filter(), volume, path, block_shape=(4, 8, 8), progress=False)
    with pytest.raises(UserInputError, match="overwrite"):
        predict_volume(box_filter(), volume, path, block_shape=(4, 8, 8), progress=False)
    other = Volume(random_volume((4, 16, 16), seed=1))
    predict_volume(box_filter(), other, path, block_shape=(4, 8, 8), overwrite=True, progress=False)
    np.testing.assert_allclose(read_zarr(path)[:], predict_array(box_filter(), other.data))


def test_integer_output_dtype_is_rounded_and_clipped(tmp_path, box_filter):
    x = np.full((2, 8, 8), 300.4, dtype=np.float32)
    x[0] = 7.6
    out = predict_volume(
        box_filter(), Volume(x), tmp_path / "o.zarr", output_dtype="uint8", progress=False
    )
    result = read_zarr(out)[:]
    assert result.dtype == np.uint8
    assert (result[0] == 8).all() and (result[1] == 255).all()


class WrongShape:
    def __init__(self, method):
        self.method = method
        self.config = method.config

    def __getattr__(self, name):
        if name == "method":
            raise AttributeError(name)
        return getattr(self.method, name)

    def predict_block(self, block, request):
        return {name: out[:-1] for name, out in self.method.predict_block(block, request).items()}


def test_wrong_block_shape_from_method_is_reported(tmp_path, random_volume):
    method = WrongShape(create_method("linear", scale_factor=2))
    with pytest.raises(RuntimeError, match="predict_block returned shape"):
        predict_volume(
            method, Volume(random_volume((4, 8, 8))), tmp_path / "o.zarr", progress=False
        )


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"output_dtype": "str"}, "output_dtype"),
        ({"num_workers": 0}, "num_workers"),
        ({"num_workers": 2, "scheduler": "tcp://127.0.0.1:1"}, "num_workers"),
        ({"scheduler": 3}, "scheduler"),
        ({"block_shape": (4, 4)}, "block_shape"),
        ({"output_path": "o.png"}, "unknown volume format"),
        ({"output_path": "in.zarr"}, "is the input"),
        ({"output_path": "o.zarr:/raw"}, "OME-Zarr group"),
    ],
)
def test_bad_options_are_user_errors(tmp_path, box_filter, options, match):
    volume = Volume(np.zeros((2, 4, 4)), source=str(tmp_path / "in.zarr"))
    output_path = f"{tmp_path}/{options.pop('output_path', 'o.zarr')}"
    with pytest.raises(UserInputError, match=match):
        predict_volume(box_filter(), volume, output_path, progress=False, **options)
    assert not list(tmp_path.iterdir())


def test_volume_must_be_a_volume(tmp_path, box_filter):
    with pytest.raises(UserInputError, match="Volume"):
        predict_volume(box_filter(), np.zeros((2, 4, 4)), tmp_path / "o.zarr", progress=False)


def test_predict_array_rejects_non_3d(box_filter):
    with pytest.raises(UserInputError, match="3D"):
        predict_array(box_filter(), np.zeros((4, 4)))


def test_a_failed_block_stops_the_run_only_after_the_running_blocks_end(
    tmp_path, random_volume, box_filter
):
    import time

    finished = []
    method = box_filter()
    predict_block = method.predict_block

    def slow_or_failing(block, request):
        if request.output_region[0].start == 0:
            raise RuntimeError("block failed")
        time.sleep(0.3)
        finished.append(request.output_region)
        return predict_block(block, request)

    method.predict_block = slow_or_failing
    volume = Volume(random_volume((8, 16, 16)))
    with pytest.raises(RuntimeError, match="block failed"):
        predict_volume(method, volume, tmp_path / "o.zarr", block_shape=(2, 16, 16), num_workers=4)
    done_when_raised = len(finished)
    time.sleep(0.6)
    assert len(finished) == done_when_raised  # nothing ran on after the error
