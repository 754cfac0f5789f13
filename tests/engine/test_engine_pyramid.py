"""predict_volume's OME-Zarr outputs: at the method's world position, with a blockwise pyramid,
in Zarr v3 (NGFF 0.5) or v2 (NGFF 0.4), valid for ome-zarr-models, resumable."""

from __future__ import annotations

import errno
import json
import os

import numpy as np
import pytest
import zarr

from vemrestore.engine import _predict as engine_module
from vemrestore.engine import predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, open_volume, write_volume
from vemrestore.io._pyramid import plan_pyramid
from vemrestore.methods import create_method

VOXEL = (40.0, 16.0, 16.0)
OFFSET = (1234.0, -8.0, 4.0)
SHAPE = (40, 24, 24)  # cubic x4 -> 160 x 24 x 24, voxel (10, 16, 16): pyramid level 1 halves z
BLOCK_SHAPE = (32, 24, 24)  # 5 blocks


@pytest.fixture
def volume(random_volume):
    return Volume(random_volume(SHAPE), voxel_size=VOXEL, translation=OFFSET, source="test")


def _predict(path, volume, method=None, **options):
    method = method or create_method("cubic", scale_factor=4)
    options = {"block_shape": BLOCK_SHAPE, "num_workers": 1, "progress": False, **options}
    return predict_volume(method, volume, path, **options)


def _levels(path):
    group = zarr.open_group(str(path), mode="r")
    return {name: group[name][:] for name in sorted(group.array_keys())}


def _multiscale(path):
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    return (attrs["ome"] if "ome" in attrs else attrs)["multiscales"][0]


@pytest.mark.parametrize("zarr_format", [3, 2])
@pytest.mark.parametrize("pyramid", [True, False])
def test_outputs_are_valid_ome_zarr_at_the_method_position(
    validate_ome_zarr, tmp_path, volume, zarr_format, pyramid
):
    method = create_method("cubic", scale_factor=4)
    path = _predict(
        tmp_path / "out.ome.zarr", volume, method, zarr_format=zarr_format, pyramid=pyramid
    )
    validate_ome_zarr(path)
    translation = method.output_translation(OFFSET, VOXEL)
    expected = plan_pyramid((160, 24, 24), (10.0, 16.0, 16.0), translation)
    assert len(expected) == 2 and expected[1].factors == (2, 1, 1)
    expected = expected if pyramid else expected[:1]
    multiscale = _multiscale(path)
    assert multiscale["name"] == "out"
    assert multiscale.get("version", "0.5") == ("0.5" if zarr_format == 3 else "0.4")
    assert [d["coordinateTransformations"] for d in multiscale["datasets"]] == [
        [
            {"type": "scale", "scale": list(level.voxel_size)},
            {"type": "translation", "translation": list(level.translation)},
        ]
        for level in expected
    ]
    levels = _levels(path)
    assert sorted(levels) == [level.path for level in expected]
    if pyramid:
        pairs = levels["0"].reshape(80, 2, 24, 24).mean(axis=1)
        np.testing.assert_allclose(levels["1"], pairs, rtol=1e-5, atol=1e-6)
    if zarr_format == 2:
        assert json.loads((path / ".zattrs").read_text())["multiscales"][0]["version"] == "0.4"
        assert json.loads((path / "0" / ".zarray").read_text())["dimension_separator"] == "/"
    result = open_volume(path)
    assert result.voxel_size == (10.0, 16.0, 16.0) and result.translation == translation


@pytest.mark.parametrize("zarr_format", [4, "3", True])
def test_unknown_zarr_format_is_one_line(tmp_path, volume, zarr_format):
    with pytest.raises(UserInputError, match="zarr_format must be 3") as caught:
        _predict(tmp_path / "out.zarr", volume, zarr_format=zarr_format)
    assert "\n" not in str(caught.value) and not list(tmp_path.iterdir())


def test_every_output_gets_its_pyramid_and_the_input_position(
    validate_ome_zarr, tmp_path, box_filter_with_aux
):
    data = np.random.default_rng(1).random((4, 130, 16), dtype=np.float32)
    volume = Volume(data, voxel_size=(8.0, 8.0, 8.0), translation=OFFSET)
    out, aux = tmp_path / "out.zarr", tmp_path / "aux.zarr"
    predict_volume(
        box_filter_with_aux(), volume, out, extra_outputs={"aux": aux}, block_shape=(4, 64, 16),
        progress=False,
    )  # fmt: skip
    for path in (out, aux):
        validate_ome_zarr(path)
        assert sorted(_levels(path)) == ["0", "1"]
        assert open_volume(path).translation == OFFSET  # same grid: same position
    np.testing.assert_allclose(_levels(aux)["1"], (2 * data + 1).reshape(4, 65, 2, 16).mean(2))


@pytest.mark.parametrize("suffix", [".h5", ".tif"])
def test_in_memory_formats_carry_the_translation(tmp_path, volume, suffix):
    method = create_method("cubic", scale_factor=4)
    result = open_volume(_predict(tmp_path / f"out{suffix}", volume, method))
    np.testing.assert_allclose(result.translation, method.output_translation(OFFSET, VOXEL))


def test_a_killed_run_resumes_blocks_then_builds_the_pyramid(tmp_path, volume, counting):
    reference = _levels(_predict(tmp_path / "reference.zarr", volume))
    path = tmp_path / "out.zarr"
    with pytest.raises(RuntimeError, match="simulated crash"):
        _predict(path, volume, counting(create_method("cubic", scale_factor=4), fail_after=2))
    partial = tmp_path / ".out.zarr.partial"
    assert "1" not in zarr.open_group(str(partial), mode="r")  # blocks first, pyramid last
    method = counting(create_method("cubic", scale_factor=4))
    _predict(path, volume, method)
    assert method.calls == 5 - 2 and not partial.exists()
    result = _levels(path)
    assert sorted(result) == ["0", "1"]
    for name in result:
        np.testing.assert_array_equal(result[name], reference[name])


def _kill_while_building_the_pyramid(monkeypatch, path, volume):
    real = engine_module.write_pyramid

    def killed(group, levels, **options):
        real(group, levels, **options)
        group["1"][...] = -1.0  # half written when the process died
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(engine_module, "write_pyramid", killed)
        with pytest.raises(KeyboardInterrupt):
            _predict(path, volume)


def test_a_run_killed_while_building_the_pyramid_rebuilds_it(
    tmp_path, volume, counting, monkeypatch
):
    reference = _levels(_predict(tmp_path / "reference.zarr", volume))
    path = tmp_path / "out.zarr"
    _kill_while_building_the_pyramid(monkeypatch, path, volume)
    assert not path.exists()
    method = counting(create_method("cubic", scale_factor=4))
    _predict(path, volume, method)
    assert method.calls == 0
    np.testing.assert_array_equal(_levels(path)["1"], reference["1"])


def test_a_resumed_run_without_pyramid_drops_the_half_built_one(
    validate_ome_zarr, tmp_path, volume, monkeypatch
):
    path = tmp_path / "out.zarr"
    _kill_while_building_the_pyramid(monkeypatch, path, volume)
    _predict(path, volume, pyramid=False)
    assert sorted(_levels(path)) == ["0"]
    assert len(_multiscale(path)["datasets"]) == 1
    validate_ome_zarr(path)


def test_after_a_failed_rename_the_pyramid_is_not_built_again(
    validate_ome_zarr, tmp_path, volume, monkeypatch
):
    path = tmp_path / "out.zarr"
    real_replace = os.replace

    def read_only(src, dst, *args, **kwargs):
        if os.fspath(dst) == os.fspath(path):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_replace(src, dst, *args, **kwargs)

    with monkeypatch.context() as patch:
        patch.setattr(os, "replace", read_only)
        with pytest.raises(UserInputError, match="Read-only file system"):
            _predict(path, volume)
    builds = []
    real = engine_module.write_pyramid
    monkeypatch.setattr(
        engine_module, "write_pyramid", lambda *a, **k: builds.append(1) or real(*a, **k)
    )
    _predict(path, volume)
    assert builds == [] and sorted(_levels(path)) == ["0", "1"]
    validate_ome_zarr(path)


def _world_centre_z(volume):
    """Intensity-weighted world z (nm) of the bright plane (mean over y, x; background removed)."""
    profile = volume.to_numpy().mean(axis=(1, 2)).astype(np.float64)
    profile -= np.median(profile)
    z = volume.translation[0] + volume.voxel_size[0] * np.arange(len(profile))
    return float((profile * z).sum() / profile.sum())


@pytest.mark.parametrize("factor", [4, 2.5])
def test_a_restored_ome_zarr_overlays_its_input(tmp_path, factor):
    data = np.full((64, 8, 8), 10.0, np.float32)
    data[29] = 200.0  # one bright section
    plane_z = OFFSET[0] + 29 * VOXEL[0]
    source = write_volume(Volume(data, VOXEL, translation=OFFSET), tmp_path / "in.ome.zarr")
    volume = open_volume(source)
    assert volume.translation == OFFSET and _world_centre_z(volume) == pytest.approx(plane_z)

    out = predict_volume(
        create_method("cubic", scale_factor=factor), volume, tmp_path / "out.ome.zarr",
        block_shape=(32, 8, 8), progress=False,
    )  # fmt: skip
    fine = VOXEL[0] / factor
    restored, level1 = open_volume(out), open_volume(f"{out}/1")
    assert restored.voxel_size[0] == pytest.approx(fine)
    assert level1.voxel_size[0] == pytest.approx(2 * fine) and level1.shape[0] == 32 * factor
    assert abs(_world_centre_z(restored) - plane_z) <= fine / 2
    assert abs(_world_centre_z(level1) - plane_z) <= fine / 2
