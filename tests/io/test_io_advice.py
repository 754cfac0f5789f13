"""NaN/Inf handled alike in every format, truncated TIFFs named as such, one-section stacks."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from vemrestore.cli import app
from vemrestore.errors import UserInputError
from vemrestore.io import check_finite, open_volume, write_volume

VOXEL = (50.0, 4.0, 4.0)
FORMATS = ["v.tif", "v.ome.tif", "v.h5", "v.zarr", "v.mrc"]
runner = CliRunner()


def _stack(shape=(8, 16, 16)) -> np.ndarray:
    return np.random.default_rng(0).random(shape, dtype=np.float32) * 100


def _nan_stack(tmp_path: Path, name: str) -> Path:
    data = _stack()
    data[3] = np.nan  # a damaged section
    write_volume(data, tmp_path / name, voxel_size=VOXEL)
    return tmp_path / name


def _one_error_line(result) -> str:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


# -- NaN: read alike everywhere, refused with the same advice where numbers are needed --


@pytest.mark.parametrize("name", FORMATS)
def test_nan_sections_open_alike_in_every_format(tmp_path, name):
    volume = open_volume(_nan_stack(tmp_path, name))
    assert np.isnan(volume.to_numpy()[3]).all()
    with pytest.raises(UserInputError) as info:
        check_finite(volume)
    message = str(info.value)
    assert "256 NaN/Inf voxels (z slices 3)" in message
    assert f"vemrestore slices {tmp_path / name} restored.zarr --detect" in message
    assert "mask the damaged slices" not in message


@pytest.mark.parametrize("name", ["v.tif", "v.h5"])
def test_slices_restores_nan_sections_of_every_format(tmp_path, name):
    src = _nan_stack(tmp_path, name)
    out = tmp_path / "out.tif"
    args = ["slices", str(src), str(out), "--missing", "3", "--method", "linear"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert np.isfinite(open_volume(out).to_numpy()).all()


@pytest.mark.parametrize("name", ["v.tif", "v.h5"])
@pytest.mark.parametrize("command", [["iso"], ["degrade", "-k", "2"]])
def test_iso_and_degrade_refuse_nan_with_the_slices_advice(tmp_path, name, command):
    src = _nan_stack(tmp_path, name)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, [command[0], str(src), str(out), *command[1:]])
    line = _one_error_line(result)
    assert "NaN/Inf voxels (z slices 3)" in line and "slices" in line and "--detect" in line
    assert not out.exists()


def test_the_advised_slices_detect_makes_the_volume_usable(tmp_path):
    src = _nan_stack(tmp_path, "v.tif")
    restored = tmp_path / "restored.zarr"
    args = ["slices", str(src), str(restored), "--detect", "--method", "linear"]
    assert runner.invoke(app, args).exit_code == 0
    check_finite(open_volume(restored))  # iso would now accept it


# -- truncated or corrupt TIFF --


def _truncated(tmp_path: Path, name: str, keep: float) -> Path:
    full = write_volume(_stack((10, 32, 32)).astype(np.uint8), tmp_path / name, voxel_size=VOXEL)
    data = full.read_bytes()
    cut = tmp_path / f"cut_{name}"
    cut.write_bytes(data[: int(len(data) * keep)])
    return cut


@pytest.mark.parametrize("keep", [0.5, 0.25])
def test_truncated_imagej_tiff_says_how_many_images_are_missing(tmp_path, keep):
    path = _truncated(tmp_path, "v.tif", keep)
    with pytest.raises(UserInputError) as info:
        open_volume(path)
    message = str(info.value)
    assert f"{path} is truncated or corrupt (expected 10 images, found 1)" in message
    assert "2D image" not in message and "\n" not in message


def test_truncated_ome_tiff_is_truncated_not_2d(tmp_path):
    path = _truncated(tmp_path, "v.ome.tif", 0.5)
    with pytest.raises(UserInputError, match=r"cut_v\.ome\.tif is truncated or corrupt"):
        open_volume(path)


def test_tifffile_complaints_stay_off_the_terminal(tmp_path, capsys):
    path = _truncated(tmp_path, "v.tif", 0.5)
    terminal = logging.StreamHandler(sys.stderr)  # as `vemrestore` logs (basicConfig)
    logging.getLogger().addHandler(terminal)
    try:
        result = runner.invoke(app, ["info", str(path)])
    finally:
        logging.getLogger().removeHandler(terminal)
    line = _one_error_line(result)
    assert "truncated or corrupt (expected 10 images, found 1)" in line
    assert "tifffile" not in capsys.readouterr().err


def test_complete_tiff_still_reads(tmp_path):
    path = write_volume(_stack(), tmp_path / "v.tif", voxel_size=VOXEL)
    assert open_volume(path).shape == (8, 16, 16)


# -- one-section stacks --


@pytest.mark.parametrize("name", FORMATS)
def test_one_section_stack_reads_back_as_one_section(tmp_path, name):
    data = _stack((1, 16, 12))
    write_volume(data, tmp_path / name, voxel_size=VOXEL)
    volume = open_volume(tmp_path / name)
    assert volume.shape == (1, 16, 12) and volume.voxel_size == VOXEL
    np.testing.assert_array_equal(volume.to_numpy(), data)


def test_info_accepts_a_one_section_stack(tmp_path):
    path = write_volume(_stack((1, 16, 12)), tmp_path / "one.tif", voxel_size=VOXEL)
    result = runner.invoke(app, ["info", str(path)])
    assert result.exit_code == 0, result.output
    assert "shape: (1, 16, 12)" in result.stdout


@pytest.mark.parametrize("options", [{}, {"imagej": True}, {"ome": True}])
def test_a_single_image_without_z_spacing_stays_2d(tmp_path, options):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((16, 16), np.uint8), **options)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserInputError, match=r"plain\.tif is a 2D image"):
            open_volume(path)
