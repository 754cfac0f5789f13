"""Running the blocks on a dask.distributed cluster gives the threaded result."""

import dask.array as da
import numpy as np
import pytest
import zarr

from vemrestore.engine import predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.methods import create_method

distributed = pytest.importorskip("distributed")


def read_zarr(path):
    return zarr.open_array(store=str(path), path="0", mode="r")[:]


class FailingMethod:
    """Delegates to a method but fails on output blocks from z = ``fail_from`` on (picklable)."""

    def __init__(self, method, fail_from):
        self.method = method
        self.config = method.config
        self.fail_from = fail_from

    def __getattr__(self, name):
        if name == "method":
            raise AttributeError(name)
        return getattr(self.method, name)

    def predict_block(self, block, request):
        if request.output_region[0].start >= self.fail_from:
            raise RuntimeError("simulated crash")
        return self.method.predict_block(block, request)


def test_local_cluster_equals_threads(tmp_path, random_volume, counting):
    x = random_volume((12, 40, 40))
    volume = Volume(da.from_array(x, chunks=(4, 20, 20)), voxel_size=(30.0, 10.0, 10.0))
    method = create_method("cubic", scale_factor=3)
    options = {"block_shape": (12, 24, 24), "progress": False}
    threaded = predict_volume(method, volume, tmp_path / "threads.zarr", **options)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        by_client = predict_volume(
            method, volume, tmp_path / "client.zarr", scheduler=client, **options
        )
        by_address = predict_volume(
            method,
            volume,
            tmp_path / "address.zarr",
            scheduler=cluster.scheduler_address,
            **options,
        )
        # A failing block surfaces as the method's own error; finished blocks stay recorded.
        with pytest.raises(RuntimeError, match="simulated crash"):
            predict_volume(
                FailingMethod(method, fail_from=12),
                volume,
                tmp_path / "failed.zarr",
                scheduler=client,
                **options,
            )
        # Unpicklable methods are refused before any work.
        with pytest.raises(UserInputError, match="cannot be pickled"):
            predict_volume(
                counting(method), volume, tmp_path / "lock.zarr", scheduler=client, **options
            )
    done = tmp_path / ".failed.zarr.partial" / ".vemrestore" / "done"
    assert {p.name for p in done.iterdir()} <= {"0_0_0", "0_0_1", "0_1_0", "0_1_1"}
    assert not (tmp_path / "failed.zarr").exists()
    expected = read_zarr(threaded)
    np.testing.assert_array_equal(read_zarr(by_client), expected)
    np.testing.assert_array_equal(read_zarr(by_address), expected)
