"""Bad input to `open_volume` gives one clear `UserInputError` naming the path."""

from __future__ import annotations

import dask.array as da
import h5py
import numpy as np
import pytest
import tifffile
import zarr

from vemrestore.errors import UserInputError
from vemrestore.io import Volume, check_finite, open_volume, write_volume

VOXEL = (50.0, 4.0, 4.0)


@pytest.mark.parametrize("name", ["missing.tif", "missing.h5:/raw", "missing.zarr", "missing.mrc"])
def test_missing_file(tmp_path, name):
    with pytest.raises(UserInputError, match="does not exist") as info:
        open_volume(tmp_path / name)
    assert str(tmp_path / "missing") in str(info.value)


def test_unknown_suffix(tmp_path):
    path = tmp_path / "vol.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(UserInputError, match=r"vol\.png.*supported: TIFF"):
        open_volume(path)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("bad.tif", b"this is not an image"),
        ("bad.tif", b"II*\x00garbage"),  # TIFF magic, broken directory
        ("bad.h5", b"this is not an image"),
        ("bad.mrc", b"this is not an image"),
    ],
)
def test_corrupt_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content * 10)
    with pytest.raises(UserInputError, match="cannot read") as info:
        open_volume(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


def test_corrupt_zarr(tmp_path):
    store = tmp_path / "bad.zarr"
    store.mkdir()
    (store / "zarr.json").write_text("{not json")
    with pytest.raises(UserInputError, match=r"cannot read .*bad\.zarr as Zarr"):
        open_volume(store)


def test_truncated_tiff(tmp_path):
    path = tmp_path / "cut.tif"
    write_volume(np.ones((8, 64, 64), np.uint8), path, voxel_size=VOXEL)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(UserInputError, match=r"cut\.tif"):
        open_volume(path)


def test_hdf5_missing_dataset_lists_datasets(tmp_path):
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as handle:
        handle["volumes/raw"] = np.zeros((4, 5, 6), np.uint8)
    with pytest.raises(UserInputError, match=r"no dataset 'nope'.*volumes/raw \(4, 5, 6\) uint8"):
        open_volume(f"{path}:/nope")


def test_hdf5_ambiguous_datasets_are_listed(tmp_path):
    path = tmp_path / "cremi.h5"
    with h5py.File(path, "w") as handle:
        handle["volumes/raw"] = np.zeros((4, 5, 6), np.uint8)
        handle["volumes/labels"] = np.zeros((4, 5, 6), np.uint64)
    with pytest.raises(UserInputError, match=r"cremi\.h5.*file\.h5:/path/to/dataset") as info:
        open_volume(path)
    assert "/volumes/raw" in str(info.value) and "/volumes/labels" in str(info.value)


def test_zarr_missing_array_lists_arrays(tmp_path):
    group = zarr.open_group(tmp_path / "s.zarr", mode="w")
    group.create_array("raw", shape=(4, 5, 6), dtype="u1")
    with pytest.raises(UserInputError, match=r"s\.zarr.*no array 'other'.*raw"):
        open_volume(tmp_path / "s.zarr:/other")


def test_2d_image_needs_a_volume(tmp_path):
    path = tmp_path / "slice.tif"
    tifffile.imwrite(path, np.zeros((32, 32), np.uint8))
    with pytest.raises(UserInputError, match=r"slice\.tif is a 2D image.*3D volume"):
        open_volume(path)


def test_single_section_volume_keeps_its_z_axis(tmp_path):
    path = tmp_path / "one.h5"
    with h5py.File(path, "w") as handle:
        handle["x"] = np.zeros((1, 32, 32), np.float32)
    assert open_volume(path).shape == (1, 32, 32)


def test_channels_need_channel_argument(tmp_path):
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(
        path, np.zeros((4, 3, 16, 16), np.uint8), imagej=True, metadata={"axes": "ZCYX"}
    )
    with pytest.raises(UserInputError) as info:
        open_volume(path)
    message = str(info.value)
    assert "rgb.tif has 3 channels (axes ZCYX)" in message
    assert "pass channel=0..2 / --channel" in message
    with pytest.raises(UserInputError, match=r"channel=3 is out of range"):
        open_volume(path, channel=3)


def test_channel_on_single_channel_volume(tmp_path):
    path = tmp_path / "v.tif"
    write_volume(np.zeros((4, 8, 8), np.uint8), path, voxel_size=VOXEL)
    assert open_volume(path, channel=0).shape == (4, 8, 8)
    with pytest.raises(UserInputError, match="single channel"):
        open_volume(path, channel=1)


def test_time_series_is_refused(tmp_path):
    path = tmp_path / "movie.tif"
    tifffile.imwrite(
        path, np.zeros((3, 4, 16, 16), np.uint8), imagej=True, metadata={"axes": "TZYX"}
    )
    with pytest.raises(UserInputError, match=r"movie\.tif has 3 time points"):
        open_volume(path)


def test_nan_in_small_volume_found_by_check_finite(tmp_path):
    data = np.zeros((4, 8, 8), np.float32)
    data[2, 3, 3] = np.nan
    data[3, 0, 0] = np.inf
    write_volume(data, tmp_path / "nan.tif", voxel_size=VOXEL)
    volume = open_volume(tmp_path / "nan.tif")  # read as it is, like every format
    with pytest.raises(
        UserInputError, match=r"nan\.tif contains 2 NaN/Inf voxels \(z slices 2, 3\)"
    ):
        check_finite(volume)


def test_nan_in_lazy_volume_found_by_check_finite(tmp_path):
    data = np.zeros((6, 8, 8), np.float32)
    data[5, 1, 1] = np.nan
    write_volume(data, tmp_path / "nan.zarr", voxel_size=VOXEL, chunks=(2, 8, 8))
    volume = open_volume(tmp_path / "nan.zarr")  # lazy: not checked on open
    assert volume.is_lazy
    with pytest.raises(UserInputError, match=r"nan\.zarr contains 1 NaN/Inf voxels \(z slices 5\)"):
        check_finite(volume)


def test_check_finite_passes_clean_volumes():
    check_finite(Volume(da.zeros((4, 8, 8), chunks=2, dtype=np.float32), source="x"))
    check_finite(Volume(np.zeros((2, 2, 2), np.uint8)))
