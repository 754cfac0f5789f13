"""Space on the command line: outputs that overlay their input, voxel sizes that drive the
factor, typed ``Z,Y,X`` options, ``--version`` and ``.ome.zarr`` names.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from vemrestore import __version__
from vemrestore.api._configure import axial_factor, factor_mismatch
from vemrestore.cli import app
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, open_volume, write_volume

runner = CliRunner()
WHERE = (1234.0, -20.0, 30.0)  # world position (nm) of the input's voxel (0, 0, 0)


def _one_error(result, *fragments: str) -> str:
    """Exit 2 and one ``error:`` line on stderr (after any ``warning:`` lines)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("warning: ")]
    assert len(errors) == 1 and errors[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]
    return errors[0]


def _sections(tmp_path: Path, name: str, voxel_size, *, bright: int | None = None) -> Path:
    """12 thick sections of 16 x 16 at ``WHERE``; section ``bright`` is a bright plane."""
    data = np.full((12, 16, 16), 20.0, np.float32)
    data += np.random.default_rng(0).random(data.shape, dtype=np.float32)
    if bright is not None:
        data[bright] = 200.0
    volume = Volume(data, voxel_size=voxel_size, translation=WHERE)
    return write_volume(volume, tmp_path / name)


def _peak_z(profile: np.ndarray) -> float:
    """Sub-voxel position (index units) of the profile's maximum (parabola through 3 points)."""
    i = int(np.argmax(profile))
    left, mid, right = profile[i - 1], profile[i], profile[i + 1]
    return i + 0.5 * (left - right) / (left - 2 * mid + right)


# -- outputs overlay their input --


@pytest.mark.parametrize("suffix", [".h5", ".mrc"])
@pytest.mark.parametrize(("options", "k"), [([], 4.0), (["--voxel-size", "25,10,10"], 2.5)])
def test_restored_bright_plane_stays_at_its_world_z(tmp_path, suffix, options, k):
    bright = 5
    src = _sections(tmp_path, f"thick{suffix}", (40.0, 10.0, 10.0), bright=bright)
    out = tmp_path / f"iso{suffix}"
    result = runner.invoke(app, ["iso", str(src), str(out), "--method", "cubic", *options])
    assert result.exit_code == 0, result.output
    section_z = 10.0 * k  # 40 nm from the file, 25 nm from --voxel-size
    world = WHERE[0] + bright * section_z  # where the plane was imaged
    restored = open_volume(out)
    assert restored.shape == (round(12 * k), 16, 16)
    assert restored.voxel_size == pytest.approx((10.0, 10.0, 10.0))
    assert restored.translation[1:] == pytest.approx(WHERE[1:])
    profile = restored.to_numpy().mean(axis=(1, 2))
    found = restored.translation[0] + _peak_z(profile) * restored.voxel_size[0]
    assert abs(found - world) <= 0.5 * restored.voxel_size[0], (found, world)
    peak = restored.translation[0] + int(np.argmax(profile)) * restored.voxel_size[0]
    assert abs(peak - world) <= 0.5 * restored.voxel_size[0] + 1e-6, (peak, world)


def test_degrade_then_iso_returns_to_the_fine_grid(tmp_path):
    fine = Volume(
        np.random.default_rng(1).random((32, 16, 16), dtype=np.float32) * 100,
        voxel_size=(10.0, 10.0, 10.0),
        translation=WHERE,
    )
    src = write_volume(fine, tmp_path / "fine.h5")
    thick = tmp_path / "thick.mrc"
    assert runner.invoke(app, ["degrade", str(src), str(thick), "-k", "4"]).exit_code == 0
    sections = open_volume(thick)
    assert sections.translation == pytest.approx((WHERE[0] + 15.0, *WHERE[1:]))  # 1.5 fine
    out = tmp_path / "iso.tif"
    result = runner.invoke(app, ["iso", str(thick), str(out), "--method", "linear"])
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.translation == pytest.approx(WHERE)
    assert restored.voxel_size == (10.0, 10.0, 10.0) and restored.shape == (32, 16, 16)


# -- voxel sizes drive the factor --


def test_iso_takes_the_factor_from_the_voxel_sizes(tmp_path):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    out = tmp_path / "iso.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--method", "linear"])
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.shape == (96, 16, 16) and restored.voxel_size == (10.0, 10.0, 10.0)


def test_fractional_factor_from_given_voxel_sizes_end_to_end(tmp_path):
    src = _sections(tmp_path, "thick.tif", (40.0, 10.0, 10.0))
    out = tmp_path / "iso.zarr"
    args = ["iso", str(src), str(out), "--voxel-size", "25,10,10", "--block", "8,16,16"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.shape == (30, 16, 16) and restored.voxel_size == (10.0, 10.0, 10.0)


@pytest.mark.parametrize("make", ["no metadata", "1 nm"])
def test_unknown_voxel_sizes_without_factor_are_refused(tmp_path, make):
    data = np.zeros((6, 16, 16), np.uint8)
    src = tmp_path / "plain.tif"
    if make == "no metadata":
        import tifffile

        tifffile.imwrite(src, data, photometric="minisblack")
    else:
        write_volume(data, src, voxel_size=(1, 1, 1))
    out = tmp_path / "out.tif"
    for args in (["iso", str(src), str(out)], ["train", "skeleton", str(src), "--out", str(out)]):
        _one_error(
            runner.invoke(app, args), "axial factor is unknown", "pass --factor or --voxel-size"
        )
        assert not out.exists()
    result = runner.invoke(app, ["iso", str(src), str(out), "-k", "3", "--method", "nearest"])
    assert result.exit_code == 0, result.output  # a given factor is taken as it is
    assert open_volume(out).shape == (18, 16, 16)


def test_a_factor_that_disagrees_with_the_voxel_sizes_is_refused(tmp_path):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "-k", "4"])
    _one_error(result, "--factor 4 disagrees", "80 x 10 x 10 nm", "z / x is 8", "--force")
    assert not out.exists()
    args = ["train", "skelem", str(src), "-k", "4", "--out", str(tmp_path / "m")]
    _one_error(runner.invoke(app, args), "--factor 4 disagrees", "--force")
    assert not (tmp_path / "m").exists()


def test_forced_factor_writes_what_was_asked_with_a_warning(tmp_path):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "-k", "4", "--force"])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "20 nm z voxels" in warnings[0], result.stderr
    restored = open_volume(out)
    assert restored.shape == (48, 16, 16) and restored.voxel_size == (20.0, 10.0, 10.0)


def test_a_factor_within_ten_percent_is_taken_silently(tmp_path):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "-k", "8.5", "--method", "nearest"])
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    assert open_volume(out).shape == (102, 16, 16)


def test_axial_factor_in_the_facade():
    thick = Volume(np.zeros((4, 8, 8)), voxel_size=(80, 10, 10), source="t.tif")
    assert axial_factor(thick) == 8.0 and axial_factor(thick, 7.5) == 7.5
    assert factor_mismatch(thick, 8.8) is None and "z / x is 8" in factor_mismatch(thick, 4)
    with pytest.raises(UserInputError, match=r"--factor 4 disagrees .* 20 nm z voxels"):
        axial_factor(thick, 4)
    with pytest.warns(UserWarning, match=r"--factor 4 forced .* 20 nm z voxels"):
        assert axial_factor(thick, 4, force=True) == 4.0
    with pytest.raises(UserInputError, match="pass --factor or --voxel-size"):
        axial_factor(Volume(np.zeros((4, 8, 8))))
    iso = Volume(np.zeros((4, 8, 8)), voxel_size=(10, 10, 10))
    with pytest.raises(UserInputError, match="z is not coarser than x"):
        axial_factor(iso)
    assert axial_factor(Volume(np.zeros((4, 8, 8)), voxel_size=(25, 10, 10))) == 2.5


def test_a_saved_model_with_another_factor_warns():
    from vemrestore.api._commands import _warn_on_factor_mismatch
    from vemrestore.methods import create_method

    thick = Volume(np.zeros((4, 8, 8)), voxel_size=(80, 10, 10), source="t.tif")
    with pytest.warns(UserWarning, match=r"the model restores factor 4, .* z / x is 8"):
        _warn_on_factor_mismatch(create_method("cubic", scale_factor=4), thick)


def test_train_takes_the_given_voxel_size(tmp_path):
    src = _sections(tmp_path, "thick.tif", (40.0, 10.0, 10.0))
    model = tmp_path / "m"
    args = ["train", "skeleton", str(src), "-k", "4", "--voxel-size", "80,10,10"]
    _one_error(runner.invoke(app, [*args, "--out", str(model)]), "z / x is 8")
    assert not model.exists()


def test_config_scale_factor_is_checked_like_factor(tmp_path):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    config = tmp_path / "skeleton.yaml"
    config.write_text("method: skeleton\nscale_factor: 4\n")
    out = tmp_path / "out.tif"
    args = ["iso", str(src), str(out), "--method", "skeleton", "--config", str(config)]
    _one_error(runner.invoke(app, args), "--factor 4 disagrees")


# -- --voxel-size on every command --


@pytest.mark.parametrize(
    "text", ["80,10", "80,10,10,10", "a,b,c", "80,-1,10", "0,10,10", "nan,1,1", ""]
)
def test_bad_voxel_size_text_is_one_line(tmp_path, text):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    for command in (["info", str(src)], ["iso", str(src), str(tmp_path / "o.tif")]):
        line = _one_error(runner.invoke(app, [*command, "--voxel-size", text]), "--voxel-size")
        assert "Z,Y,X" in line


def test_given_voxel_size_reaches_every_output(tmp_path):
    src = _sections(tmp_path, "thick.tif", (80.0, 10.0, 10.0))
    voxel = ["--voxel-size", "50,4,4"]
    degraded = tmp_path / "deg.tif"
    assert (
        runner.invoke(app, ["degrade", str(src), str(degraded), "-k", "2", *voxel]).exit_code == 0
    )
    assert open_volume(degraded).voxel_size == (100.0, 4.0, 4.0)
    stack = tmp_path / "slices.tif"
    args = ["slices", str(src), str(stack), "--missing", "3", "--method", "linear", *voxel]
    assert runner.invoke(app, args).exit_code == 0
    assert open_volume(stack).voxel_size == (50.0, 4.0, 4.0)
    assert open_volume(stack).translation == pytest.approx(WHERE)


def test_info_prints_readable_size_factor_and_position(tmp_path):
    src = _sections(tmp_path, "thick.h5", (80.0, 10.0, 10.0))
    result = runner.invoke(app, ["info", str(src)])
    assert result.exit_code == 0, result.output
    assert "size: 12 x 16 x 16 (3.07 kvox, 12 KiB float32)" in result.stdout
    assert "axial_factor: 8 (z / x voxel size" in result.stdout
    assert f"translation: {WHERE} nm" in result.stdout
    given = runner.invoke(app, ["info", str(src), "--voxel-size", "25,10,10"])
    assert "axial_factor: 2.5 " in given.stdout and "(25.0, 10.0, 10.0)" in given.stdout


def test_info_says_when_the_factor_is_unknown(tmp_path):
    src = write_volume(np.zeros((4, 8, 8), np.uint8), tmp_path / "v.h5", voxel_size=(1, 1, 1))
    result = runner.invoke(app, ["info", str(src)])
    assert result.exit_code == 0, result.output
    assert (
        "axial_factor: unknown" in result.stdout and "voxel_size_unknown: Z, Y, X" in result.stdout
    )


# -- CLI details --


@pytest.mark.parametrize("block", [["--block", "8,16,16"], ["--block", "8", "16", "16"]])
def test_block_in_comma_and_space_form(tmp_path, block):
    src = _sections(tmp_path, "thick.tif", (40.0, 10.0, 10.0))
    out = tmp_path / "out.zarr"
    result = runner.invoke(app, ["iso", str(src), str(out), "--method", "nearest", *block])
    assert result.exit_code == 0, result.output
    chunks = json.loads((out / "0" / "zarr.json").read_text())["chunk_grid"]
    assert chunks["configuration"]["chunk_shape"] == [8, 16, 16]


@pytest.mark.parametrize("text", ["8,16", "8,0,16", "8,16,x", "8.5,16,16"])
def test_bad_block_is_one_line(tmp_path, text):
    src = _sections(tmp_path, "thick.tif", (40.0, 10.0, 10.0))
    out = tmp_path / "out.zarr"
    _one_error(runner.invoke(app, ["iso", str(src), str(out), "--block", text]), "--block")
    assert not out.exists()


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"vemrestore {__version__}"


def test_iso_method_help_lists_only_axial_methods():
    help_text = runner.invoke(app, ["iso", "--help"]).stdout
    assert "lanczos" in help_text and "lateral" not in help_text and "slices" not in help_text


def test_ome_zarr_everywhere(tmp_path):
    src = _sections(tmp_path, "x.ome.zarr", (40.0, 10.0, 10.0))
    info = runner.invoke(app, ["info", str(src)])
    assert info.exit_code == 0 and "format: ome-zarr" in info.stdout, info.output
    out = tmp_path / "y.ome.zarr"
    result = runner.invoke(app, ["iso", str(src), str(out), "--method", "linear"])
    assert result.exit_code == 0, result.output
    for path, name in ((src, "x"), (out, "y")):
        ome = json.loads((path / "zarr.json").read_text())["attributes"]["ome"]
        assert ome["multiscales"][0]["name"] == name
    restored = open_volume(out)
    assert restored.translation[0] == pytest.approx(WHERE[0] - 1.5 * 10.0)
    assert math.isclose(restored.voxel_size[0], 10.0)
