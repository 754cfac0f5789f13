"""Where a volume sits in space: translations read, written and carried by every format.

``Volume.translation`` is the world position (z, y, x) in nm of voxel
(0, 0, 0)'s centre. Each format keeps it in the field its own tools read:
ImageJ ``xorigin``/``yorigin``/``zorigin`` and OME ``Plane`` positions
(TIFF), ``offset``/``translation`` attributes (HDF5, CREMI and gunpowder),
the header ``origin`` in Å (MRC) and the NGFF ``translation`` (OME-Zarr).
"""

import json
import warnings

import h5py
import mrcfile
import numpy as np
import pytest
import tifffile

from vemrestore.degrade import AxialGrid
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, describe_volume, open_volume, write_volume
from vemrestore.io._check import axial_ratio, describe_size, unknown_voxel_axes
from vemrestore.methods import create_method

VOXEL = (40.0, 8.0, 6.0)
WHERE = (1234.5, -16.0, 30.0)
FORMATS = ["v.tif", "v.ome.tif", "v.h5", "v.mrc", "v.zarr", "v.ome.zarr"]


def _data(shape=(4, 6, 5), dtype=np.uint8) -> np.ndarray:
    return (np.arange(np.prod(shape)) % 200).reshape(shape).astype(dtype)


@pytest.mark.parametrize("name", FORMATS)
def test_translation_round_trips_in_every_format(tmp_path, name):
    path = write_volume(Volume(_data(), voxel_size=VOXEL, translation=WHERE), tmp_path / name)
    volume = open_volume(path)
    assert volume.translation == pytest.approx(WHERE, abs=1e-3)
    assert volume.voxel_size == VOXEL


@pytest.mark.parametrize("name", ["v.tif", "v.h5", "v.mrc", "v.zarr"])
def test_a_volume_at_the_origin_reads_back_at_the_origin(tmp_path, name):
    path = write_volume(_data(), tmp_path / name, voxel_size=VOXEL)
    assert open_volume(path).translation == (0.0, 0.0, 0.0)


def test_float_tiff_written_as_ome_keeps_its_position(tmp_path):
    data = _data().astype(np.float64)  # ImageJ cannot hold float64 positions: OME-TIFF
    path = write_volume(data, tmp_path / "f.tif", voxel_size=VOXEL, translation=WHERE)
    assert open_volume(path).translation == pytest.approx(WHERE)


def test_written_fields_are_the_ones_other_tools_read(tmp_path):
    volume = Volume(_data(), voxel_size=VOXEL, translation=WHERE)
    with h5py.File(write_volume(volume, tmp_path / "v.h5"), "r") as handle:
        attrs = handle["data"].attrs
        np.testing.assert_allclose(attrs["offset"], WHERE)  # CREMI / gunpowder: nm, z/y/x
        np.testing.assert_allclose(attrs["resolution"], VOXEL)
    with mrcfile.open(write_volume(volume, tmp_path / "v.mrc")) as mrc:
        origin = mrc.header.origin  # Å, x/y/z
        assert (float(origin.x), float(origin.y), float(origin.z)) == pytest.approx(
            (300.0, -160.0, 12345.0)
        )
    with tifffile.TiffFile(write_volume(volume, tmp_path / "v.tif")) as tif:
        meta = tif.imagej_metadata  # ImageJ calibration origin, in voxels
        assert (meta["zorigin"], meta["yorigin"], meta["xorigin"]) == pytest.approx(
            (-1234.5 / 40, 2.0, -5.0)
        )
    with tifffile.TiffFile(write_volume(volume, tmp_path / "v.ome.tif")) as tif:
        xml = tif.ome_metadata
    assert 'TheZ="1"' in xml and 'PositionZ="1274.5"' in xml and 'PositionZUnit="nm"' in xml


def test_hdf5_cremi_offset_and_translation_attributes(tmp_path):
    path = tmp_path / "cremi.h5"
    with h5py.File(path, "w") as handle:
        raw = handle.create_dataset("volumes/raw", data=_data())
        raw.attrs["resolution"] = [40.0, 4.0, 4.0]
        raw.attrs["offset"] = [1600.0, 40.0, 80.0]
        labels = handle.create_dataset("volumes/labels", data=_data())
        labels.attrs["resolution"] = [40.0, 4.0, 4.0]
        labels.attrs["offset"] = [1.0, 2.0, 3.0]
        labels.attrs["translation"] = [400.0, 8.0, 12.0]  # the NGFF name wins
        broken = handle.create_dataset("broken", data=_data())
        broken.attrs["voxel_size"] = [40.0, 4.0, 4.0]
        broken.attrs["offset"] = "somewhere"  # not numbers: ignored, still readable
        cyx = handle.create_dataset("czyx", data=_data((2, 4, 6, 5)))
        cyx.attrs["voxel_size"] = [1.0, 40.0, 4.0, 4.0]
        cyx.attrs["offset"] = [0.0, 80.0, 8.0, 4.0]  # in the dataset's axis order
    assert open_volume(f"{path}:/volumes/raw").translation == (1600.0, 40.0, 80.0)
    assert open_volume(f"{path}:/volumes/labels").translation == (400.0, 8.0, 12.0)
    assert open_volume(f"{path}:/broken").translation == (0.0, 0.0, 0.0)
    assert open_volume(f"{path}:/czyx", channel=1).translation == (80.0, 8.0, 4.0)


def test_mrc_origin_in_angstrom_becomes_nm_zyx(tmp_path):
    path = tmp_path / "tomo.mrc"
    with mrcfile.new(path) as mrc:
        mrc.set_data(_data().astype(np.float32))
        mrc.voxel_size = (60.0, 80.0, 400.0)  # x, y, z in Å
        mrc.header.origin.x, mrc.header.origin.y, mrc.header.origin.z = 600.0, -80.0, 4000.0
    volume = open_volume(path)
    assert volume.voxel_size == (40.0, 8.0, 6.0)
    assert volume.translation == (400.0, -8.0, 60.0)


def test_ome_tiff_plane_position_with_units(tmp_path):
    path = tmp_path / "stage.ome.tif"
    planes = {
        "PositionX": [1.5] * 4,
        "PositionXUnit": ["µm"] * 4,
        "PositionY": [2.0] * 4,  # no unit: OME's "reference frame", not a length
        "PositionZ": [0.25 + 0.04 * i for i in range(4)],
        "PositionZUnit": ["µm"] * 4,
    }
    metadata = {"axes": "ZYX", "PhysicalSizeZ": 0.04, "PhysicalSizeY": 0.008}
    metadata |= {"PhysicalSizeX": 0.006, "Plane": planes}
    tifffile.imwrite(path, _data(), ome=True, metadata=metadata)
    assert open_volume(path).translation == pytest.approx((250.0, 0.0, 1500.0))


def test_imagej_origin_is_in_voxels(tmp_path):
    path = tmp_path / "ij.tif"
    metadata = {"spacing": 40.0, "unit": "nm", "axes": "ZYX", "zorigin": -2.0, "xorigin": 3.0}
    tifffile.imwrite(path, _data(), imagej=True, resolution=(1 / 8, 1 / 6), metadata=metadata)
    assert open_volume(path).translation == pytest.approx((80.0, 0.0, -24.0))


def test_ome_zarr_image_is_named_without_ome(tmp_path):
    path = write_volume(_data(), tmp_path / "x.ome.zarr", voxel_size=VOXEL)
    multiscale = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
    assert multiscale["multiscales"][0]["name"] == "x"


def test_write_volume_translation_overrides_the_volume(tmp_path):
    volume = Volume(_data(), voxel_size=VOXEL, translation=WHERE)
    path = write_volume(volume, tmp_path / "v.h5", translation=(1.0, 2.0, 3.0))
    assert open_volume(path).translation == (1.0, 2.0, 3.0)


# -- voxel sizes given instead of the file's --


def test_open_volume_takes_a_given_voxel_size_without_warning(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, _data(), photometric="minisblack")  # no metadata at all
    with pytest.warns(UserWarning, match="no voxel size"):
        assert unknown_voxel_axes(open_volume(path)) == "ZYX"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        volume = open_volume(path, voxel_size=(25, 10, 10))
    assert volume.voxel_size == (25.0, 10.0, 10.0)
    assert unknown_voxel_axes(volume) == "" and axial_ratio(volume) == 2.5


@pytest.mark.parametrize("bad", [(1, 2), (0, 1, 1), (-4, 2, 2), ("a", 1, 1), (np.nan, 1, 1)])
def test_a_bad_given_voxel_size_is_one_user_error(tmp_path, bad):
    path = write_volume(_data(), tmp_path / "v.tif", voxel_size=VOXEL)
    with pytest.raises(UserInputError, match=r"voxel size must be three positive numbers"):
        open_volume(path, voxel_size=bad)


def test_axial_ratio_is_z_over_x_when_known():
    assert axial_ratio(Volume(_data(), voxel_size=(80, 10, 10))) == 8.0
    assert axial_ratio(Volume(_data(), voxel_size=(1, 1, 1))) is None  # the 1 nm default
    assert axial_ratio(Volume(_data(), voxel_size=(50, 4, 4))) == 12.5
    assert axial_ratio(Volume(_data(), voxel_size=(30, 9, 9))) == pytest.approx(3.33333)


def test_describe_volume_is_readable(tmp_path):
    path = write_volume(_data((5, 6, 7)), tmp_path / "v.h5", voxel_size=(80, 10, 10))
    info = describe_volume(open_volume(path))
    assert info["size"] == "5 x 6 x 7 (210 vox, 210 bytes uint8)"
    assert info["axial_factor"] == 8.0 and info["translation"] == (0.0, 0.0, 0.0)
    assert info["voxel_size_unknown"] == ""
    big = describe_size((250, 250, 250), np.dtype("uint8"))
    assert big == "250 x 250 x 250 (15.6 Mvox, 14.9 MiB uint8)"
    assert describe_size((2, 3, 4), np.dtype("float32")) == "2 x 3 x 4 (24 vox, 96 bytes float32)"


# -- the restored grid overlays the sections --


@pytest.mark.parametrize("k", [4, 2.5, 8])
def test_axial_output_translation_centres_section_zero(k):
    """Section 0 (centre at translation z) sits at fine slice (k - 1) / 2 of the output."""
    method = create_method("cubic", scale_factor=k)
    translation, voxel_size = (1000.0, 5.0, -5.0), (40.0, 10.0, 10.0)
    out = method.output_translation(translation, voxel_size)
    fine = method.output_voxel_size(voxel_size)[0]
    assert out == pytest.approx(AxialGrid(k).output_translation(translation, voxel_size))
    assert out[1:] == (5.0, -5.0)
    centre = AxialGrid(k).centres(1)[0]  # fine index of section 0's centre
    assert out[0] + centre * fine == pytest.approx(1000.0)
    assert out[0] == pytest.approx(1000.0 - (k - 1) / 2 * 40.0 / k)
