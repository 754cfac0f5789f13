"""A killed run resumes where it stopped; a partial run with other settings is refused."""

import numpy as np
import pytest
import zarr

from vemrestore.engine import predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.methods import create_method

BLOCK_SHAPE = (16, 24, 24)  # 64 x 40 x 40 output -> 4 x 2 x 2 = 16 blocks
NUM_BLOCKS = 16
CRASH_AFTER = 5


def read_zarr(path):
    return zarr.open_array(store=str(path), path="0", mode="r")[:]


@pytest.fixture
def crashed(tmp_path, random_volume, counting):
    """A run that died after CRASH_AFTER blocks; returns (volume, output path, partial path)."""
    volume = Volume(random_volume((16, 40, 40)), voxel_size=(40.0, 10.0, 10.0), source="test")
    path = tmp_path / "out.zarr"
    method = counting(create_method("cubic", scale_factor=4), fail_after=CRASH_AFTER)
    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_volume(method, volume, path, block_shape=BLOCK_SHAPE, num_workers=1, progress=False)
    return volume, path, tmp_path / ".out.zarr.partial"


def test_resume_skips_finished_blocks_and_matches_uninterrupted_run(
    tmp_path, crashed, counting, caplog
):
    volume, path, partial = crashed
    assert not path.exists()
    assert len(list((partial / ".vemrestore" / "done").iterdir())) == CRASH_AFTER

    method = counting(create_method("cubic", scale_factor=4))
    with caplog.at_level("INFO", logger="vemrestore.engine"):
        predict_volume(method, volume, path, block_shape=BLOCK_SHAPE, progress=False)
    assert method.calls == NUM_BLOCKS - CRASH_AFTER
    assert f"skipping {CRASH_AFTER} of {NUM_BLOCKS} blocks" in caplog.text
    assert path.exists() and not partial.exists()
    assert not (path / ".vemrestore").exists()
    run = zarr.open_group(store=str(path), mode="r").attrs["vemrestore"]
    assert run["fingerprint"]["block_shape"] == list(BLOCK_SHAPE)

    reference = predict_volume(
        create_method("cubic", scale_factor=4),
        volume,
        tmp_path / "reference.zarr",
        block_shape=BLOCK_SHAPE,
        progress=False,
    )
    np.testing.assert_array_equal(read_zarr(path), read_zarr(reference))


@pytest.mark.parametrize(
    ("method_name", "block_shape"),
    [("linear", BLOCK_SHAPE), ("cubic", (16, 16, 16))],
)
def test_partial_run_with_other_settings_is_refused(crashed, method_name, block_shape):
    volume, path, partial = crashed
    with pytest.raises(UserInputError, match="different settings") as err:
        predict_volume(
            create_method(method_name, scale_factor=4),
            volume,
            path,
            block_shape=block_shape,
            progress=False,
        )
    assert str(partial) in str(err.value) and "overwrite" in str(err.value)
    assert len(list((partial / ".vemrestore" / "done").iterdir())) == CRASH_AFTER


def test_overwrite_discards_the_partial_run(crashed, counting):
    volume, path, partial = crashed
    method = counting(create_method("linear", scale_factor=4))
    predict_volume(method, volume, path, block_shape=BLOCK_SHAPE, overwrite=True, progress=False)
    assert method.calls == NUM_BLOCKS
    assert path.exists() and not partial.exists()


def test_partial_without_run_record_is_refused(tmp_path, random_volume):
    (tmp_path / ".out.zarr.partial").mkdir()
    with pytest.raises(UserInputError, match="no readable run record"):
        predict_volume(
            create_method("cubic", scale_factor=4),
            Volume(random_volume((4, 8, 8))),
            tmp_path / "out.zarr",
            progress=False,
        )


def test_resume_with_another_damage_map_is_refused(tmp_path, random_volume, counting):
    from vemrestore.methods.slices import SliceDamageMap

    volume = Volume(random_volume((16, 40, 40)), voxel_size=(50.0, 5.0, 5.0), source="stack")
    path = tmp_path / "out.zarr"

    def restorer(missing):
        method = create_method("slices-linear")
        method.set_damage(SliceDamageMap.build(volume.shape, missing=missing))
        return method

    with pytest.raises(RuntimeError, match="simulated crash"):
        predict_volume(
            counting(restorer([3]), fail_after=2),
            volume,
            path,
            block_shape=BLOCK_SHAPE,
            num_workers=1,
            progress=False,
        )
    with pytest.raises(UserInputError, match="different settings"):
        predict_volume(restorer([3, 9]), volume, path, block_shape=BLOCK_SHAPE, progress=False)
    method = counting(restorer([3]))
    predict_volume(method, volume, path, block_shape=BLOCK_SHAPE, progress=False)
    assert method.calls == 4 - 2  # 16 x 40 x 40 in 16 x 24 x 24 blocks: 4 blocks
