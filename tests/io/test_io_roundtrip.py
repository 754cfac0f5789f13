"""Every format round-trips the voxels, the dtype and the voxel size."""

from __future__ import annotations

import json
import warnings

import dask.array as da
import h5py
import mrcfile
import numpy as np
import pytest
import tifffile
import zarr

from vemrestore.io import Volume, _common, _tiff, describe_volume, open_volume, write_volume

VOXEL = (50.0, 4.0, 4.0)
OUTPUTS = ["vol.tif", "vol.ome.tif", "vol.h5", "vol.h5:/group/raw", "vol.zarr", "vol.mrc"]


def _volume(dtype, shape=(6, 20, 18), seed=0):
    rng = np.random.default_rng(seed)
    return (rng.random(shape) * 250).astype(dtype)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("name", OUTPUTS)
def test_round_trip(tmp_path, name, dtype):
    data = _volume(dtype)
    written = write_volume(data, tmp_path / name, voxel_size=VOXEL)
    assert written == tmp_path / name.split(":")[0]
    volume = open_volume(tmp_path / name)
    assert volume.dtype == np.dtype(dtype)
    assert volume.voxel_size == VOXEL
    assert volume.axes == "ZYX"
    np.testing.assert_array_equal(volume.to_numpy(), data)
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # no temporary left


@pytest.mark.parametrize("name", OUTPUTS)
def test_round_trip_dask_input_written_chunk_by_chunk(tmp_path, name):
    data = _volume(np.float32, shape=(10, 24, 20))
    lazy = da.from_array(data, chunks=(3, 10, 10))
    volume = Volume(lazy, voxel_size=(30.0, 5.0, 5.0), source="computed")
    write_volume(volume, tmp_path / name, chunks=None)
    result = open_volume(tmp_path / name)
    assert result.voxel_size == (30.0, 5.0, 5.0)
    np.testing.assert_array_equal(result.to_numpy(), data)


@pytest.mark.parametrize("name", ["vol.tif", "vol.mrc"])
def test_float64_is_stored_as_float32(tmp_path, name):
    data = _volume(np.float64)
    write_volume(data, tmp_path / name, voxel_size=VOXEL)
    volume = open_volume(tmp_path / name)
    assert volume.dtype == np.float32
    np.testing.assert_allclose(volume.to_numpy(), data, rtol=1e-6)


@pytest.mark.parametrize("name", ["vol.h5", "vol.zarr"])
def test_float64_kept_in_hdf5_and_zarr(tmp_path, name):
    write_volume(_volume(np.float64), tmp_path / name, voxel_size=VOXEL)
    assert open_volume(tmp_path / name).dtype == np.float64


def test_dtype_cast_rounds_and_clips(tmp_path):
    data = np.array([-3.0, 0.4, 0.6, 254.6, 300.0] * 4, dtype=np.float32).reshape(2, 2, 5)
    write_volume(data, tmp_path / "vol.h5", voxel_size=VOXEL, dtype="uint8")
    result = open_volume(tmp_path / "vol.h5").to_numpy()
    assert result.dtype == np.uint8
    assert result[0, 0].tolist() == [0, 0, 1, 255, 255]


def test_integer_dtype_cast_clips_to_the_target_range(tmp_path):
    data = np.array([0, 100, 300, 70000] * 2, dtype=np.int32).reshape(2, 1, 4)
    write_volume(data, tmp_path / "vol.zarr", voxel_size=VOXEL, dtype=np.uint8)
    assert open_volume(tmp_path / "vol.zarr").to_numpy()[0, 0].tolist() == [0, 100, 255, 255]


def test_chunks_are_used_for_hdf5_and_zarr(tmp_path):
    data = _volume(np.uint8, shape=(8, 32, 32))
    write_volume(data, tmp_path / "vol.h5", voxel_size=VOXEL, chunks=(4, 16, 64))
    with h5py.File(tmp_path / "vol.h5", "r") as handle:
        assert handle["data"].chunks == (4, 16, 32)
        np.testing.assert_allclose(handle["data"].attrs["element_size_um"], [0.05, 0.004, 0.004])
    write_volume(data, tmp_path / "vol.zarr", voxel_size=VOXEL, chunks=(4, 16, 16))
    assert zarr.open_group(tmp_path / "vol.zarr", mode="r")["0"].chunks == (4, 16, 16)


def test_ome_zarr_metadata_is_ngff(tmp_path):
    write_volume(_volume(np.uint8), tmp_path / "vol.zarr", voxel_size=(50, 4, 3))
    attrs = json.loads((tmp_path / "vol.zarr" / "zarr.json").read_text())["attributes"]["ome"]
    multiscale = attrs["multiscales"][0]
    assert attrs["version"] == "0.5"
    assert [a["name"] for a in multiscale["axes"]] == ["z", "y", "x"]
    assert {a["unit"] for a in multiscale["axes"]} == {"nanometer"}
    transform = multiscale["datasets"][0]["coordinateTransformations"][0]
    assert transform == {"type": "scale", "scale": [50.0, 4.0, 3.0]}


def test_big_tiff_is_written_as_ome_bigtiff(tmp_path, monkeypatch):
    monkeypatch.setattr(_tiff, "BIGTIFF_BYTES", 100)
    data = _volume(np.uint16)
    write_volume(data, tmp_path / "vol.tif", voxel_size=VOXEL)
    with tifffile.TiffFile(tmp_path / "vol.tif") as tif:
        assert tif.is_bigtiff and tif.is_ome and not tif.is_imagej
    volume = open_volume(tmp_path / "vol.tif")
    assert volume.voxel_size == VOXEL
    np.testing.assert_array_equal(volume.to_numpy(), data)


def test_tiff_dtype_imagej_cannot_hold_goes_to_ome(tmp_path):
    data = _volume(np.int32)
    write_volume(data, tmp_path / "vol.tif", voxel_size=VOXEL)
    volume = open_volume(tmp_path / "vol.tif")
    assert volume.dtype == np.int32 and volume.voxel_size == VOXEL


def test_imagej_micron_metadata_is_converted_to_nm(tmp_path):
    path = tmp_path / "micron.tif"
    tifffile.imwrite(
        path,
        _volume(np.uint8),
        imagej=True,
        resolution=(1 / 0.004, 1 / 0.005),
        metadata={"spacing": 0.05, "unit": "micron", "axes": "ZYX"},
    )
    assert open_volume(path).voxel_size == (50.0, 5.0, 4.0)


def test_imagej_escaped_micro_sign_unit(tmp_path):
    path = tmp_path / "um.tif"
    tifffile.imwrite(
        path,
        _volume(np.uint8),
        imagej=True,
        resolution=(1 / 0.01, 1 / 0.01),
        metadata={"spacing": 0.03, "unit": "\\u00B5m", "axes": "ZYX"},
    )
    assert open_volume(path).voxel_size == (30.0, 10.0, 10.0)


def test_ome_tiff_physical_size_with_default_micrometre_unit(tmp_path):
    path = tmp_path / "vol.ome.tif"
    tifffile.imwrite(
        path,
        _volume(np.uint16),
        ome=True,
        metadata={"axes": "ZYX", "PhysicalSizeX": 0.006, "PhysicalSizeY": 0.006},
    )
    with pytest.warns(UserWarning, match="no voxel size for axis Z"):
        volume = open_volume(path)
    assert volume.voxel_size == (1.0, 6.0, 6.0)


def test_ome_tiff_physical_size_units(tmp_path):
    path = tmp_path / "vol.ome.tif"
    tifffile.imwrite(
        path,
        _volume(np.uint16),
        ome=True,
        metadata={
            "axes": "ZYX",
            **{"PhysicalSizeZ": 400.0, "PhysicalSizeZUnit": "Å"},
            **{"PhysicalSizeY": 0.005, "PhysicalSizeYUnit": "µm"},
            **{"PhysicalSizeX": 5.0, "PhysicalSizeXUnit": "nm"},
        },
    )
    assert open_volume(path).voxel_size == (40.0, 5.0, 5.0)


def test_tiff_without_metadata_warns_and_uses_1nm(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _volume(np.uint8), photometric="minisblack", metadata=None)
    with pytest.warns(UserWarning, match=r"plain\.tif gives no voxel size"):
        volume = open_volume(path)
    assert volume.voxel_size == (1.0, 1.0, 1.0)
    assert volume.shape == (6, 20, 18)


def test_imagej_pixel_unit_warns(tmp_path):
    path = tmp_path / "pixel.tif"
    tifffile.imwrite(
        path, _volume(np.uint8), imagej=True, metadata={"unit": "pixel", "axes": "ZYX"}
    )
    with pytest.warns(UserWarning, match="'pixel' is not a length"):
        assert open_volume(path).voxel_size == (1.0, 1.0, 1.0)


def test_tiff_channel_axis_and_squeezed_singletons(tmp_path):
    data = _volume(np.uint8, shape=(1, 5, 3, 16, 12))  # TZCYX with T=1
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX", "unit": "nm"})
    volume = open_volume(path, channel=2)
    assert volume.metadata["stored_axes"] == "ZCYX"
    np.testing.assert_array_equal(volume.to_numpy(), data[0, :, 2])


def test_tiff_singleton_time_and_channel_are_squeezed(tmp_path):
    data = _volume(np.uint8, shape=(1, 5, 1, 16, 12))
    path = tmp_path / "hyper.tif"
    tifffile.imwrite(path, data, imagej=True, metadata={"axes": "TZCYX", "unit": "nm"})
    np.testing.assert_array_equal(open_volume(path).to_numpy(), data[0, :, 0])


def test_hdf5_4d_needs_channel(tmp_path):
    data = _volume(np.uint16, shape=(2, 4, 8, 8))
    with h5py.File(tmp_path / "multi.h5", "w") as handle:
        handle["img"] = data
        handle["img"].attrs["resolution"] = [1, 40, 8, 8]
    volume = open_volume(tmp_path / "multi.h5:/img", channel=1)
    np.testing.assert_array_equal(volume.to_numpy(), data[1])
    assert volume.voxel_size == (40.0, 8.0, 8.0)


def test_hdf5_ilastik_axistags_channel_last(tmp_path):
    data = _volume(np.uint8, shape=(4, 8, 8, 2))
    tags = {"axes": [{"key": k} for k in "zyxc"]}
    with h5py.File(tmp_path / "ilastik.h5", "w") as handle:
        handle["exported_data"] = data
        handle["exported_data"].attrs["axistags"] = json.dumps(tags)
        handle["exported_data"].attrs["element_size_um"] = [0.03, 0.006, 0.006]
    volume = open_volume(tmp_path / "ilastik.h5", channel=0)
    np.testing.assert_array_equal(volume.to_numpy(), data[..., 0])
    assert volume.voxel_size == (30.0, 6.0, 6.0)


def test_hdf5_single_volume_is_found_without_dataset_path(tmp_path):
    data = _volume(np.uint8)
    with h5py.File(tmp_path / "one.h5", "w") as handle:
        handle["meta/table"] = np.arange(5)
        handle["volumes/raw"] = data
        handle["volumes/raw"].attrs["voxel_size"] = VOXEL
    volume = open_volume(tmp_path / "one.h5")
    assert volume.metadata["dataset"] == "/volumes/raw"
    assert volume.voxel_size == VOXEL
    assert volume.is_lazy
    np.testing.assert_array_equal(volume.to_numpy(), data)


def test_plain_zarr_array_with_attrs_and_inner_paths(tmp_path):
    data = _volume(np.uint16)
    group = zarr.open_group(tmp_path / "plain.zarr", mode="w")
    array = group.create_array("raw", shape=data.shape, dtype=data.dtype, chunks=(2, 8, 8))
    array[...] = data
    array.attrs["resolution"] = list(VOXEL)
    for spec in ("plain.zarr", "plain.zarr:/raw", "plain.zarr/raw"):
        volume = open_volume(tmp_path / spec)
        assert volume.voxel_size == VOXEL
        assert volume.metadata["format"] == "zarr"
        np.testing.assert_array_equal(volume.to_numpy(), data)


def test_ome_zarr_level_path_and_v2_ngff_04(tmp_path):
    data = _volume(np.uint8, shape=(2, 4, 12, 12))
    group = zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
    group.create_array("s0", shape=data.shape, dtype=data.dtype, chunks=(1, 2, 6, 6))[...] = data
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": [
                {"name": "c", "type": "channel"},
                {"name": "z", "type": "space", "unit": "micrometer"},
                {"name": "y", "type": "space", "unit": "micrometer"},
                {"name": "x", "type": "space", "unit": "micrometer"},
            ],
            "datasets": [
                {
                    "path": "s0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1, 0.05, 0.004, 0.004]}
                    ],
                }
            ],
            "coordinateTransformations": [{"type": "scale", "scale": [1, 2, 1, 1]}],
        }
    ]
    for spec in ("v2.zarr", "v2.zarr/s0"):
        volume = open_volume(tmp_path / spec, channel=1)
        assert volume.metadata["format"] == "ome-zarr"
        assert volume.voxel_size == (100.0, 4.0, 4.0)
        np.testing.assert_array_equal(volume.to_numpy(), data[1])


def test_mrc_voxel_size_in_angstrom(tmp_path):
    data = _volume(np.int16)
    with mrcfile.new(tmp_path / "tomo.rec") as mrc:
        mrc.set_data(data)
        mrc.voxel_size = (42.0, 42.0, 420.0)
    volume = open_volume(tmp_path / "tomo.rec")
    assert volume.voxel_size == (42.0, 4.2, 4.2)
    assert volume.dtype == np.int16
    np.testing.assert_array_equal(volume.to_numpy(), data)


def test_mrc_uint8_is_readable_as_unsigned_by_imod_convention(tmp_path):
    data = np.full((3, 4, 5), 200, np.uint8)
    write_volume(data, tmp_path / "vol.mrc", voxel_size=VOXEL)
    with mrcfile.open(tmp_path / "vol.mrc") as mrc:
        assert int(mrc.header.mode) == 0
        assert float(mrc.header.dmax) == 200.0
    assert open_volume(tmp_path / "vol.mrc").to_numpy().max() == 200


@pytest.mark.parametrize("name", ["vol.tif", "vol.mrc"])
def test_large_tiff_and_mrc_open_lazily(tmp_path, monkeypatch, name):
    data = _volume(np.uint16, shape=(7, 16, 12))
    write_volume(data, tmp_path / name, voxel_size=VOXEL)
    monkeypatch.setattr(_common, "LAZY_BYTES", 100)
    volume = open_volume(tmp_path / name)
    assert volume.is_lazy
    assert volume.voxel_size == VOXEL
    np.testing.assert_array_equal(np.asarray(volume.data[3]), data[3])
    np.testing.assert_array_equal(volume.to_numpy(), data)


def test_small_tiff_and_mrc_open_in_memory(tmp_path):
    write_volume(_volume(np.uint8), tmp_path / "vol.mrc", voxel_size=VOXEL)
    assert not open_volume(tmp_path / "vol.mrc").is_lazy


def test_write_uses_volume_voxel_size_and_override(tmp_path):
    volume = Volume(_volume(np.uint8), voxel_size=(20.0, 2.0, 2.0))
    write_volume(volume, tmp_path / "a.tif")
    write_volume(volume, tmp_path / "b.tif", voxel_size=(9, 3, 3))
    assert open_volume(tmp_path / "a.tif").voxel_size == (20.0, 2.0, 2.0)
    assert open_volume(tmp_path / "b.tif").voxel_size == (9.0, 3.0, 3.0)


def test_three_slice_tiff_is_not_mistaken_for_rgb(tmp_path):
    data = _volume(np.uint8, shape=(3, 16, 16))
    write_volume(data, tmp_path / "three.tif", voxel_size=VOXEL)
    np.testing.assert_array_equal(open_volume(tmp_path / "three.tif").to_numpy(), data)


def test_describe_volume(tmp_path):
    data = _volume(np.uint8)
    write_volume(data, tmp_path / "vol.zarr", voxel_size=VOXEL)
    info = describe_volume(open_volume(tmp_path / "vol.zarr"))
    assert info["shape"] == data.shape
    assert info["dtype"] == "uint8"
    assert info["voxel_size"] == VOXEL
    assert info["format"] == "ome-zarr"
    assert info["lazy"] is True
    assert info["chunks"] is not None
    assert info["min"] == data.min() and info["max"] == data.max()
    assert info["size_mb"] == pytest.approx(data.nbytes / 2**20)
    assert info["extent_um"] == pytest.approx((0.3, 0.08, 0.072))


@pytest.mark.realdata
def test_real_isbi_voxel_size(real_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = open_volume(real_path("isbi_train"))
    assert volume.shape == (30, 512, 512)
    assert volume.voxel_size == (50.0, 4.0, 4.0)


def test_mrc_axis_mapping_is_honoured(tmp_path):
    zyx = _volume(np.float32, shape=(4, 6, 8))
    with mrcfile.new(tmp_path / "yfast.mrc") as mrc:
        mrc.set_data(np.ascontiguousarray(zyx.transpose(0, 2, 1)))  # stored as (Z, X, Y)
        mrc.header.mapc, mrc.header.mapr, mrc.header.maps = 2, 1, 3
        mrc.voxel_size = 10.0
    volume = open_volume(tmp_path / "yfast.mrc")
    assert volume.metadata["stored_axes"] == "ZXY"
    np.testing.assert_array_equal(volume.to_numpy(), zyx)


def test_rgb_tiff_volume_channel(tmp_path):
    data = _volume(np.uint8, shape=(5, 16, 12, 3))
    path = tmp_path / "rgb.tif"
    tifffile.imwrite(path, data, photometric="rgb")
    with pytest.warns(UserWarning, match="no voxel size"):
        volume = open_volume(path, channel=1)
    np.testing.assert_array_equal(volume.to_numpy(), data[..., 1])
