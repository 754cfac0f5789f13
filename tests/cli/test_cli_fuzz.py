"""Property test of the CLI contract over random shapes, dtypes, voxel sizes and factors.

Every run of ``degrade`` or ``iso`` (cheap methods) either succeeds (exit 0,
an output of the promised shape that ``info`` reads back) or refuses (exit 2,
one ``error:`` line, nothing at the output path). Never a traceback, never a
partial or unreadable output.
"""

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from vemrestore.cli import app
from vemrestore.io import Volume, open_volume, write_volume

runner = CliRunner()

SUFFIXES = (".tif", ".h5", ".zarr", ".mrc")
DTYPES = ("uint8", "uint16", "float32")


@st.composite
def volumes(draw):
    shape = (
        draw(st.integers(1, 12)),
        draw(st.integers(1, 20)),
        draw(st.integers(1, 20)),
    )
    dtype = draw(st.sampled_from(DTYPES))
    seed = draw(st.integers(0, 2**16))
    data = np.random.default_rng(seed).random(shape) * 200
    voxel = tuple(draw(st.floats(0.5, 100.0)) for _ in range(3))
    return data.astype(dtype), voxel


factors = st.one_of(st.floats(0.5, 12.0), st.sampled_from([1.0, 2.0, 3.0, 4.0, 2.5, 70.0]))


def _check_contract(result, output, expected_shape):
    if result.exit_code == 0:
        assert output.exists(), result.output
        written = open_volume(output)
        assert written.shape == expected_shape, (written.shape, expected_shape)
        info = runner.invoke(app, ["info", str(output)])
        assert info.exit_code == 0, info.output
    else:
        assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
        assert not output.exists()


def _path(tmp, stem, suffix):
    return f"{tmp / stem}{suffix}" + (":/volume" if suffix == ".h5" else "")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    volume=volumes(),
    factor=factors,
    src_suffix=st.sampled_from(SUFFIXES),
    dst_suffix=st.sampled_from(SUFFIXES),
)
def test_degrade_succeeds_or_refuses_cleanly(
    tmp_path_factory, volume, factor, src_suffix, dst_suffix
):
    tmp = tmp_path_factory.mktemp("degrade")
    data, voxel = volume
    src = _path(tmp, "in", src_suffix)
    write_volume(Volume(data, voxel_size=voxel), src)
    dst = _path(tmp, "out", dst_suffix)
    result = runner.invoke(app, ["degrade", src, dst, "--factor", repr(factor)])
    sections = math.floor(data.shape[0] / factor + 1e-9) if factor > 0 else 0
    _check_contract(result, tmp / f"out{dst_suffix}", (sections, *data.shape[1:]))


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    volume=volumes(),
    factor=factors,
    method=st.sampled_from(["nearest", "linear", "cubic", "lanczos"]),
    src_suffix=st.sampled_from(SUFFIXES),
    dst_suffix=st.sampled_from(SUFFIXES),
)
def test_iso_succeeds_or_refuses_cleanly(
    tmp_path_factory, volume, factor, method, src_suffix, dst_suffix
):
    tmp = tmp_path_factory.mktemp("iso")
    data, voxel = volume
    src = _path(tmp, "in", src_suffix)
    write_volume(Volume(data, voxel_size=voxel), src)
    dst = _path(tmp, "out", dst_suffix)
    result = runner.invoke(
        app,
        ["iso", src, dst, "--factor", repr(factor), "--method", method, "--block", "8", "8", "8"],
    )
    expected = (round(data.shape[0] * factor), *data.shape[1:])
    _check_contract(result, tmp / f"out{dst_suffix}", expected)


def test_a_single_section_input_is_refused_not_misread(tmp_path):
    # A one-section TIFF reads back as a 2D image: every command must say so in one line.
    src = tmp_path / "one.tif"
    write_volume(Volume(np.zeros((2, 8, 8), np.uint8), voxel_size=(40, 10, 10)), src)
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["degrade", str(src), str(out), "--factor", "2"])
    _check_contract(result, out, (1, 8, 8))


pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
