"""OME-Zarr written by vemrestore: translation, pyramids, Zarr v3 (NGFF 0.5) and v2 (NGFF 0.4),
all valid for ome-zarr-models and read back with their world position."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest
import zarr

from vemrestore.io import Volume, open_volume, write_ngff_metadata, write_volume
from vemrestore.io._pyramid import create_level_array, plan_pyramid, write_pyramid
from vemrestore.io._zarr import write_zarr

VOXEL = (40.0, 10.0, 10.0)
OFFSET = (1000.0, -35.0, 20.0)


def _ramp(shape):
    return np.arange(np.prod(shape), dtype=np.float32).reshape(shape) % 251


def _mean2(data, factors):
    """Reference 2 x mean along the axes with factor 2 (odd remainders trimmed)."""
    for axis, f in enumerate(factors):
        if f == 2:
            n = data.shape[axis] // 2 * 2
            data = np.take(data, np.arange(n), axis=axis)
            shape = (*data.shape[:axis], n // 2, 2, *data.shape[axis + 1 :])
            data = data.reshape(shape).mean(axis=axis + 1)
    return data


def _transforms(dataset):
    return {t["type"]: t[t["type"]] for t in dataset["coordinateTransformations"]}


# --- which levels ---------------------------------------------------------------------------


def test_anisotropic_levels_halve_the_fine_axes_first_then_all():
    levels = plan_pyramid((200, 1024, 1030), VOXEL, OFFSET)
    assert [lv.voxel_size for lv in levels] == [
        (40.0, 10.0, 10.0),
        (40.0, 20.0, 20.0),
        (40.0, 40.0, 40.0),
        (80.0, 80.0, 80.0),
        (80.0, 160.0, 160.0),  # z (100 voxels) is too short to halve again
    ]
    assert [lv.shape for lv in levels][-2:] == [(100, 128, 128), (100, 64, 64)]
    assert [lv.path for lv in levels] == ["0", "1", "2", "3", "4"]
    # a 2 x mean is centred half a voxel of the finer level further along
    assert levels[1].translation == (1000.0, -30.0, 25.0)
    assert levels[3].translation == (1020.0, 0.0, 55.0)  # -35 + (8 - 1) / 2 * 10


def test_levels_stop_at_about_64_voxels_and_small_volumes_get_none():
    levels = plan_pyramid((128, 127, 1000), (8.0, 8.0, 8.0))
    assert [lv.shape for lv in levels] == [
        (128, 127, 1000),
        (64, 127, 500),
        (64, 127, 250),
        (64, 127, 125),
    ]
    assert all(min(lv.shape) >= 64 for lv in levels)
    assert len(plan_pyramid((64, 120, 120), (8.0, 8.0, 8.0))) == 1
    assert len(plan_pyramid((1, 200, 200), (50.0, 4.0, 4.0), min_size=16)) == 4


def test_write_pyramid_is_the_2x_mean_and_drops_stale_levels(tmp_path):
    group = zarr.open_group(str(tmp_path / "p.zarr"), mode="w", zarr_format=3)
    data = _ramp((12, 70, 41))
    create_level_array(group, "0", data.shape, data.dtype, (5, 16, 16))[...] = data
    create_level_array(group, "3", (2, 2, 2), "uint8", (2, 2, 2))  # left by an earlier pyramid
    levels = plan_pyramid(data.shape, VOXEL, min_size=10)
    assert [lv.factors for lv in levels[1:]] == [(1, 2, 2), (1, 2, 2)]
    write_pyramid(group, levels, num_workers=2)
    assert sorted(group.array_keys()) == ["0", "1", "2"]
    np.testing.assert_allclose(group["1"][:], _mean2(data, (1, 2, 2)), rtol=1e-6)
    np.testing.assert_allclose(group["2"][:], _mean2(group["1"][:], (1, 2, 2)), rtol=1e-6)
    assert group["2"].shape == (12, 17, 10) and group["1"].metadata.dimension_names == tuple("zyx")
    write_pyramid(group, levels[:1])
    assert sorted(group.array_keys()) == ["0"]


def test_pyramid_memory_is_bounded_by_chunks_not_by_the_volume(tmp_path):
    group = zarr.open_group(str(tmp_path / "big.zarr"), mode="w", zarr_format=3)
    shape = (16, 512, 512)  # 16 MiB of float32 in chunks of 256 KiB
    create_level_array(group, "0", shape, "float32", (16, 64, 64))[...] = 1.0
    levels = plan_pyramid(shape, VOXEL)
    tracemalloc.start()
    try:
        write_pyramid(group, levels, num_workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * 2**20, f"peak {peak / 2**20:.1f} MiB for a 16 MiB level 0"
    assert group[levels[-1].path].shape == levels[-1].shape == (16, 64, 64)


def test_integer_levels_are_rounded_means():
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    data = np.zeros((1, 4, 256), np.uint8)
    data[0, :, 1::2] = 255
    data[0, :, 2::4] = 1
    create_level_array(group, "0", data.shape, data.dtype, data.shape)[...] = data
    write_pyramid(group, plan_pyramid(data.shape, (1.0, 1.0, 1.0)))
    level = group["1"][:]
    assert level.dtype == np.uint8
    assert set(np.unique(level)) == {128}  # (0 + 255) / 2 and (1 + 255) / 2, half up


# --- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize("zarr_format", [3, 2])
def test_metadata_has_scale_then_translation_and_no_ome_in_the_name(zarr_format):
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w", zarr_format=zarr_format)
    create_level_array(group, "0", (4, 8, 8), "uint8", (4, 8, 8))
    write_ngff_metadata(group, VOXEL, translation=OFFSET, name="cells.ome")
    attrs = group.attrs.asdict()
    multiscale = (attrs["ome"] if zarr_format == 3 else attrs)["multiscales"][0]
    assert multiscale["name"] == "cells"
    assert multiscale["datasets"][0]["coordinateTransformations"] == [
        {"type": "scale", "scale": list(VOXEL)},
        {"type": "translation", "translation": list(OFFSET)},
    ]
    with pytest.raises(ValueError, match="translation"):
        write_ngff_metadata(group, VOXEL, translation=(0.0, np.nan, 0.0))


# --- write_volume / write_zarr outputs -------------------------------------------------------


def test_write_volume_zarr_has_a_valid_pyramid_at_its_world_position(validate_ome_zarr, tmp_path):
    data = _ramp((20, 300, 140))
    path = write_volume(Volume(data, VOXEL, translation=OFFSET), tmp_path / "em.ome.zarr")
    image = validate_ome_zarr(path)
    multiscale = image.attributes.ome.multiscales[0]
    assert multiscale.name == "em"
    assert [d.path for d in multiscale.datasets] == ["0", "1", "2"]
    group = zarr.open_group(str(path), mode="r")
    expected = plan_pyramid(data.shape, VOXEL, OFFSET)
    datasets = group.attrs["ome"]["multiscales"][0]["datasets"]
    for level, dataset in zip(expected, datasets, strict=True):
        assert group[level.path].shape == level.shape
        assert _transforms(dataset) == {
            "scale": list(level.voxel_size),
            "translation": list(level.translation),
        }
    np.testing.assert_allclose(group["1"][:], _mean2(data, (1, 2, 2)), rtol=1e-6)
    full, coarse = open_volume(path), open_volume(f"{path}/2")
    assert full.voxel_size == VOXEL and full.translation == OFFSET
    assert coarse.voxel_size == expected[2].voxel_size
    assert coarse.translation == expected[2].translation


@pytest.mark.parametrize("pyramid", [True, False])
def test_zarr_v2_is_ngff_04_for_older_readers(validate_ome_zarr, tmp_path, pyramid):
    data = _ramp((16, 260, 30)).astype(np.uint16)
    path = tmp_path / "em.zarr"
    write_zarr(
        data, path, VOXEL, chunks=(8, 64, 30), name="em", translation=OFFSET, zarr_format=2,
        pyramid=pyramid,
    )  # fmt: skip
    validate_ome_zarr(path)
    attrs = json.loads((path / ".zattrs").read_text())
    multiscale = attrs["multiscales"][0]
    assert multiscale["version"] == "0.4"
    assert [a["unit"] for a in multiscale["axes"]] == ["nanometer"] * 3
    assert len(multiscale["datasets"]) == (3 if pyramid else 1)
    for dataset in multiscale["datasets"]:
        array = json.loads((path / dataset["path"] / ".zarray").read_text())
        assert array["dimension_separator"] == "/" and array["compressor"]["id"] == "blosc"
    assert (path / "0" / "0" / "0" / "0").is_file()  # nested chunk keys
    volume = open_volume(path)
    assert volume.translation == OFFSET and volume.voxel_size == VOXEL
    np.testing.assert_array_equal(volume.to_numpy(), data)


def test_write_volume_without_translation_writes_zero(validate_ome_zarr, tmp_path):
    path = write_volume(np.ones((4, 8, 8), np.uint8), tmp_path / "a.zarr", voxel_size=VOXEL)
    validate_ome_zarr(path)
    dataset = zarr.open_group(str(path), mode="r").attrs["ome"]["multiscales"][0]["datasets"][0]
    assert _transforms(dataset)["translation"] == [0.0, 0.0, 0.0]
    assert open_volume(path).translation == (0.0, 0.0, 0.0)


# --- reading translations of other writers --------------------------------------------------


def test_ngff_04_translation_of_dataset_and_multiscale_is_read_in_nm(tmp_path):
    group = zarr.open_group(str(tmp_path / "other.zarr"), mode="w", zarr_format=2)
    group.create_array("s1", shape=(4, 6, 6), dtype="uint8", chunks=(4, 6, 6))[...] = 1
    axes = [{"name": a, "type": "space", "unit": "micrometer"} for a in "zyx"]
    group.attrs["multiscales"] = [
        {
            "version": "0.4",
            "axes": axes,
            "datasets": [
                {
                    "path": "s1",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [0.05, 0.008, 0.008]},
                        {"type": "translation", "translation": [0.1, 0.002, 0.0]},
                    ],
                }
            ],
            # applied after the dataset's: scales its translation, then shifts
            "coordinateTransformations": [
                {"type": "scale", "scale": [2.0, 1.0, 1.0]},
                {"type": "translation", "translation": [1.0, 0.0, -0.5]},
            ],
        }
    ]
    volume = open_volume(tmp_path / "other.zarr")
    assert volume.voxel_size == (100.0, 8.0, 8.0)
    assert volume.translation == (1200.0, 2.0, -500.0)
