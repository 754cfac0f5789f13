"""CLI ``vemrestore slices``: restore given, masked and detected sections; report; errors."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from vemrestore.api._slices import prepare_slices
from vemrestore.bench import em_phantom
from vemrestore.cli import app
from vemrestore.io import Volume, open_volume

runner = CliRunner()


def write_stack(path, stack):
    """ImageJ TIFF with 50 nm sections of 5 nm pixels."""
    tifffile.imwrite(
        path,
        stack,
        imagej=True,
        resolution=(1 / 5, 1 / 5),
        metadata={"spacing": 50, "unit": "nm", "axes": "ZYX"},
    )


@pytest.fixture
def stack_tif(tmp_path):
    path = tmp_path / "stack.tif"
    write_stack(path, em_phantom((12, 48, 48), num_cells=12, rng=4))
    return path


def test_missing_section_is_restored_and_the_rest_copied(stack_tif, tmp_path):
    out, report = tmp_path / "out.tif", tmp_path / "report.json"
    args = ["slices", str(stack_tif), str(out), "--missing", "3,7-8", "--method", "linear"]
    result = runner.invoke(app, [*args, "--report", str(report)])
    assert result.exit_code == 0, result.output
    stack = tifffile.imread(stack_tif)
    restored = open_volume(out).to_numpy()
    assert restored.dtype == stack.dtype
    kept = np.setdiff1d(np.arange(12), [3, 7, 8])
    np.testing.assert_array_equal(restored[kept], stack[kept])
    expected = np.rint((stack[2].astype(np.float32) + stack[4]) / 2)
    np.testing.assert_array_equal(restored[3], expected.astype(stack.dtype))
    summary = json.loads(report.read_text())
    assert [s["index"] for s in summary["sections"]] == [3, 7, 8]
    assert summary["method"] == "slices-linear" and summary["seconds"] >= 0
    assert "restored 3 of 12 sections" in result.stdout


def test_mask_restores_only_masked_pixels(stack_tif, tmp_path):
    stack = tifffile.imread(stack_tif)
    mask = np.zeros(stack.shape, np.uint8)
    mask[5, 10:30, 12:20] = 1
    mask_path, out = tmp_path / "mask.tif", tmp_path / "out.zarr"
    tifffile.imwrite(mask_path, mask)
    damaged = stack.copy()
    damaged[5, 10:30, 12:20] = 255
    write_stack(stack_tif, damaged)
    args = ["slices", str(stack_tif), str(out), "--mask", str(mask_path), "--method", "flow"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    restored = open_volume(out).to_numpy()
    np.testing.assert_array_equal(restored[mask == 0], damaged[mask == 0])
    error = np.abs(restored[mask == 1].astype(float) - stack[mask == 1]).mean()
    assert error < np.abs(255.0 - stack[mask == 1]).mean() / 2


def test_detect_finds_a_blank_section(stack_tif, tmp_path):
    stack = tifffile.imread(stack_tif)
    stack[6] = 0
    write_stack(stack_tif, stack)
    out = tmp_path / "out.tif"
    result = runner.invoke(
        app, ["slices", str(stack_tif), str(out), "--detect", "--method", "linear"]
    )
    assert result.exit_code == 0, result.output
    assert "section     6: whole" in result.stdout and "[detected]" in result.stdout
    assert open_volume(out).to_numpy()[6].mean() > 20


def test_diffusion_reuses_a_saved_model(stack_tif, tmp_path):
    model = tmp_path / "model"
    options = {"base_channels": 4, "attention_heads": 2, "depth": 1}
    options["inference"] = {"num_inference_steps": 2, "halo": 8}
    options["train"] = {"num_steps": 2, "patch_size": 16, "batch_size": 2, "num_threads": 1}
    stack = Volume(tifffile.imread(stack_tif))
    prepare_slices(
        stack, missing=[4], model_dir=model, options=options, progress=False, from_scratch=True
    )
    out = tmp_path / "out.tif"
    result = runner.invoke(
        app, ["slices", str(stack_tif), str(out), "--missing", "4", "--model-dir", str(model)]
    )
    assert result.exit_code == 0, result.output
    assert "slices-diffusion: restored 1 of 12" in result.stdout
    restored = open_volume(out).to_numpy()
    np.testing.assert_array_equal(np.delete(restored, 4, 0), np.delete(stack.data, 4, 0))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--missing", "3,x"], "cannot read section index 'x'"),
        (["--missing", "12"], "outside 0..11"),
        (["--method", "cubic"], "unknown slice method 'cubic'"),
    ],
)
def test_bad_options_are_one_line(stack_tif, tmp_path, args, message):
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["slices", str(stack_tif), str(out), *args])
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0]
    assert not out.exists()


def test_mask_of_wrong_shape_is_one_line(stack_tif, tmp_path):
    mask = tmp_path / "mask.tif"
    tifffile.imwrite(mask, np.zeros((12, 48, 40), np.uint8))
    out = tmp_path / "out.tif"
    result = runner.invoke(app, ["slices", str(stack_tif), str(out), "--mask", str(mask)])
    assert result.exit_code == 2
    assert "mask has shape (12, 48, 40) but the volume has shape (12, 48, 48)" in result.stderr
    assert not out.exists()


def test_bad_indices_leave_no_run_state(stack_tif, tmp_path):
    out = tmp_path / "out.zarr"
    result = runner.invoke(app, ["slices", str(stack_tif), str(out), "--missing", "3,x"])
    assert result.exit_code == 2
    assert not (tmp_path / ".out.zarr.run").exists()
