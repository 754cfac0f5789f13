"""Every user mistake: exit code 2, one line on stderr, nothing at the output path."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from vemrestore.cli import app

runner = CliRunner()


def _vol(tmp_path: Path, name="in.tif", shape=(16, 24, 24), dtype=np.uint8) -> Path:
    path = tmp_path / name
    data = (np.random.default_rng(0).random(shape) * 200).astype(dtype)
    tifffile.imwrite(
        path,
        data,
        imagej=True,
        resolution=(0.1, 0.1),
        metadata={"spacing": 40, "unit": "nm", "axes": "ZYX"},
    )
    return path


def _assert_user_error(result, *fragments: str) -> None:
    """Exit 2 and one ``error:`` line on stderr (after any one-line ``warning:`` lines)."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("warning: ")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: "), errors[0]
    assert lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment.lower() in errors[0].lower(), errors[0]


def _leftovers(tmp_path: Path, name: str) -> list[Path]:
    return [p for p in tmp_path.iterdir() if name.split(".")[0] in p.name]


def test_missing_input(tmp_path):
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(tmp_path / "nope.tif"), str(out), "--factor", "4"])
    _assert_user_error(result, "nope.tif")
    assert not out.exists()


def test_corrupt_file(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage" * 10)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(bad), str(out), "--factor", "4"])
    _assert_user_error(result, "bad.tif")
    assert not out.exists()


def test_unknown_format(tmp_path):
    src = tmp_path / "in.xyz"
    src.write_bytes(b"\x00" * 100)
    result = runner.invoke(app, ["info", str(src)])
    _assert_user_error(result, "in.xyz")


def test_2d_image_where_volume_needed(tmp_path):
    src = tmp_path / "flat.tif"
    tifffile.imwrite(src, np.zeros((32, 32), np.uint8))
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", "4"])
    _assert_user_error(result, "flat.tif", "3d")
    assert not out.exists()


def test_4d_without_channel(tmp_path):
    src = tmp_path / "multi.tif"
    tifffile.imwrite(
        src, np.zeros((8, 3, 16, 16), np.uint8), imagej=True, metadata={"axes": "ZCYX"}
    )
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", "4"])
    _assert_user_error(result, "multi.tif", "channel")
    assert not out.exists()


def test_nan_and_inf(tmp_path):
    data = np.ones((16, 16, 16), np.float32)
    data[3, 4, 5] = np.nan
    data[4, 4, 5] = np.inf
    src = tmp_path / "nan.tif"
    tifffile.imwrite(src, data)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["degrade", str(src), str(out), "--factor", "4"])
    _assert_user_error(result, "nan.tif")
    assert not out.exists()


def test_empty_array(tmp_path):
    src = tmp_path / "empty.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("data", shape=(0, 16, 16), dtype=np.uint8)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", f"{src}:/data", str(out), "--factor", "4"])
    _assert_user_error(result, "empty")
    assert not out.exists()


@pytest.mark.parametrize("factor", ["1", "0.5", "-3", "1000"])
def test_bad_factor(tmp_path, factor):
    src = _vol(tmp_path)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", factor])
    _assert_user_error(result, "factor")
    assert not out.exists()
    result = runner.invoke(app, ["degrade", str(src), str(out), "--factor", factor])
    _assert_user_error(result, "factor")
    assert not out.exists()


def test_output_equal_to_input(tmp_path):
    src = _vol(tmp_path)
    before = src.read_bytes()
    result = runner.invoke(app, ["iso", str(src), str(src), "--factor", "4", "--overwrite"])
    _assert_user_error(result, "in.tif")
    assert src.read_bytes() == before


def test_unwritable_output(tmp_path):
    src = _vol(tmp_path)
    blocker = tmp_path / "afile"
    blocker.write_text("not a directory")
    out = blocker / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", "4"])
    _assert_user_error(result, "out.tif")
    assert not out.exists()


def test_existing_output_is_kept_without_overwrite(tmp_path):
    src = _vol(tmp_path)
    out = tmp_path / "out.tif"
    out.write_bytes(b"keep me")
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", "4"])
    _assert_user_error(result, "overwrite")
    assert out.read_bytes() == b"keep me"


def test_unknown_method(tmp_path):
    src = _vol(tmp_path)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", "4", "--method", "cubik"])
    _assert_user_error(result, "cubik", "cubic")
    assert not out.exists()


def test_bench_bad_arguments(tmp_path):
    result = runner.invoke(app, ["bench", "--factors", "4"])
    _assert_user_error(result, "--data")
    result = runner.invoke(
        app, ["bench", "--data", str(tmp_path / "missing.tif"), "--methods", "nearest"]
    )
    _assert_user_error(result, "missing.tif")


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["iso", "IN", "OUT", "--factor", "abc"], ("--factor", "number", "iso --help")),
        (["iso", "IN", "--factor", "4"], ("missing argument", "dst")),
        (["iso", "IN", "OUT", "--factor", "4", "--bogus"], ("--bogus",)),
        (["--bogus", "info", "IN"], ("--bogus", "vemrestore --help")),
        (["isoo"], ("isoo", "iso")),
        (["train", "skeleton", "IN", "--factor", "4"], ("missing option", "--out")),
        (["train", "skelem", "IN", "-k", "x", "--out", "m"], ("--factor", "train skelem --help")),
        (["degrade", "IN", "OUT", "--factor", "4", "--fwhm", "wide"], ("--fwhm",)),
        (["slices", "IN", "OUT", "--block", "8", "8"], ("--block",)),
    ],
)
def test_usage_errors_are_one_line(tmp_path, args, fragments):
    out = tmp_path / "out.tif"
    args = [str(_vol(tmp_path)) if a == "IN" else str(out) if a == "OUT" else a for a in args]
    result = runner.invoke(app, args)
    _assert_user_error(result, *fragments)
    assert "╭" not in result.output and "Usage:" not in result.output  # no rich box
    assert not out.exists()


@pytest.mark.parametrize("args", [["--help"], ["iso", "--help"], ["train", "lateral", "--help"]])
def test_help_still_works(args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout


def test_no_arguments_shows_the_help():
    result = runner.invoke(app, ["train"])
    assert "Usage" in result.output and "skeleton" in result.output


def test_a_warning_is_one_line_without_its_source(tmp_path):
    src = tmp_path / "plain.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v", data=np.zeros((4, 8, 8), np.uint8))  # no voxel size: a warning
    result = runner.invoke(app, ["info", f"{src}:/v"])
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("warning: ") and "no voxel size" in lines[0], lines[0]
    assert "Warning" not in lines[0] and ".py" not in lines[0]


def test_iso_refuses_a_method_that_is_not_axial(tmp_path):
    src = _vol(tmp_path)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["iso", str(src), str(out), "--factor", "4", "--method", "lateral"])
    _assert_user_error(result, "lateral", "not an axial method", "cubic")
    assert not out.exists()


def test_iso_help_lists_the_axial_methods_only():
    import typer.main

    from vemrestore.api import axial_methods
    from vemrestore.methods import available_methods

    iso = typer.main.get_command(app).commands["iso"]
    text = next(p.help for p in iso.params if p.name == "method")
    listed = set(text.split(":", 1)[1].strip(" .").replace(" ", "").split(","))
    assert listed == set(axial_methods())
    assert set(available_methods()) - listed  # lateral, slices-* exist and are not listed


@pytest.mark.parametrize(
    ("slices", "factor", "fix"),
    [(3, "2", "--factor 1.5 or smaller"), (5, "3", "--factor 2.5"), (2, "1.5", "at least 3")],
)
def test_degrade_refuses_fewer_than_two_sections(tmp_path, slices, factor, fix):
    src = tmp_path / "thin.h5"
    with h5py.File(src, "w") as f:
        f.create_dataset("v", data=np.ones((slices, 8, 8), np.uint8))
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["degrade", f"{src}:/v", str(out), "--factor", factor])
    _assert_user_error(result, f"--factor {factor} leaves 1 section(s)", "at least 2", fix)
    assert not out.exists()
