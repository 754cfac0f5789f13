"""CLI of D2R: iso end to end, train with kept stage II volumes, predict, refused options."""

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from vemrestore.bench import em_phantom
from vemrestore.cli import app
from vemrestore.io import open_volume

runner = CliRunner()

TINY_TRAIN = """  num_steps: 2
  batch_size: 2
  patch_size: 16
  checkpoint_every: 2
  validate_every: 2
  num_threads: 1
"""
TINY_D2R = f"""method: d2r
scale_factor: 4
channels: 4
num_blocks: 1
patch_sections: 2
halo_sections: 2
teacher_options:
  base_channels: 4
  depth: 2
  pool_size: 8
  train:
{TINY_TRAIN.replace("  ", "    ")}
train:
{TINY_TRAIN}
"""


@pytest.fixture
def degraded_tif(tmp_path):
    """A phantom sectioned by 4 along z: 12 sections of 40 x 40, 32 x 8 x 8 nm."""
    path = tmp_path / "degraded.tif"
    fine = em_phantom((48, 40, 40), num_cells=20, rng=1).astype(np.float32)
    sections = fine.reshape(12, 4, 40, 40).mean(axis=1).astype(np.uint8)
    tifffile.imwrite(
        path,
        sections,
        imagej=True,
        resolution=(1 / 8, 1 / 8),
        metadata={"spacing": 32, "unit": "nm", "axes": "ZYX"},
    )
    return path


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "d2r.yaml"
    path.write_text(TINY_D2R)
    return path


def test_iso_d2r_end_to_end(degraded_tif, config, tmp_path):
    out = tmp_path / "iso.zarr"
    args = ["iso", str(degraded_tif), str(out), "--method", "d2r", "--config", str(config)]
    result = runner.invoke(app, [*args, "--sampling-steps", "2"])
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.shape == (48, 40, 40)
    assert not list(tmp_path.glob(".iso*.run"))  # the run folder went with the finished output


def test_train_d2r_keeps_the_recovered_volumes_then_predicts(degraded_tif, config, tmp_path):
    model, kept = tmp_path / "model", tmp_path / "kept"
    args = ["train", "d2r", str(degraded_tif), "--out", str(model), "--config", str(config)]
    result = runner.invoke(app, [*args, "--keep-recovered", str(kept), "--steps", "4"])
    assert result.exit_code == 0, result.output
    for name in ("xz", "yz"):
        assert open_volume(kept / f"{name}.zarr").shape == (48, 40, 40)
    saved = (model / "config.json").read_text()
    assert '"teacher": "diffusion"' in saved
    assert not (model / "checkpoints" / "recovered").exists()  # kept only in --keep-recovered
    out = tmp_path / "restored.tif"
    result = runner.invoke(app, ["predict", str(model), str(degraded_tif), str(out)])
    assert result.exit_code == 0, result.output
    assert open_volume(out).shape == (48, 40, 40)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (["--factor", "2.5", "--voxel-size", "20,8,8"], "integer scale_factor"),
        (["--teacher", "bogus"], "teacher"),
        (["--teacher", "skeleton", "--sampling-steps", "3"], "teacher 'skeleton'"),
    ],
)
def test_bad_options_give_one_line_and_exit_2(
    degraded_tif, tmp_path, assert_refused, options, fragment
):
    model = tmp_path / "model"
    args = ["train", "d2r", str(degraded_tif), "--out", str(model), *options]
    result = runner.invoke(app, args)
    assert_refused(result, fragment)
    assert not model.exists()


def test_teacher_of_the_config_file_is_kept(degraded_tif, tmp_path):
    config = tmp_path / "d2r.yaml"
    config.write_text(
        TINY_D2R.replace("teacher_options:", "teacher: skeleton\nteacher_options:").replace(
            "  pool_size: 8\n", ""
        )
    )
    model = tmp_path / "model"
    args = ["train", "d2r", str(degraded_tif), "--out", str(model), "--config", str(config)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert '"teacher": "skeleton"' in (model / "config.json").read_text()


def test_too_many_sampling_steps_give_one_line(degraded_tif, tmp_path, assert_refused):
    model = tmp_path / "model"
    args = ["train", "d2r", str(degraded_tif), "--out", str(model), "--sampling-steps", "5000"]
    assert_refused(runner.invoke(app, args), "num_inference_steps=5000")
