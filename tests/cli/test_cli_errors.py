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
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


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
