"""The CLI's happy paths on tiny synthetic volumes."""

import json

import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from vemrestore.bench import em_phantom
from vemrestore.cli import app
from vemrestore.io import open_volume

runner = CliRunner()


@pytest.fixture
def phantom_tif(tmp_path):
    path = tmp_path / "phantom.tif"
    tifffile.imwrite(
        path,
        em_phantom((48, 40, 40), num_cells=20, rng=1),
        imagej=True,
        resolution=(1 / 8, 1 / 8),
        metadata={"spacing": 8, "unit": "nm", "axes": "ZYX"},
    )
    return path


def test_info_prints_shape_and_voxel_size(phantom_tif):
    result = runner.invoke(app, ["info", str(phantom_tif)])
    assert result.exit_code == 0, result.output
    assert "48" in result.stdout and "8.0" in result.stdout


def test_degrade_then_iso_restores_geometry(phantom_tif, tmp_path):
    degraded = tmp_path / "degraded.tif"
    result = runner.invoke(app, ["degrade", str(phantom_tif), str(degraded), "--factor", "4"])
    assert result.exit_code == 0, result.output
    low = open_volume(degraded)
    assert low.shape == (12, 40, 40)
    assert low.voxel_size == pytest.approx((32.0, 8.0, 8.0))
    assert low.dtype == np.uint8

    restored = tmp_path / "restored.zarr"
    result = runner.invoke(
        app, ["iso", str(degraded), str(restored), "--factor", "4", "--method", "cubic"]
    )
    assert result.exit_code == 0, result.output
    out = open_volume(restored)
    assert out.shape == (48, 40, 40)
    assert out.voxel_size == pytest.approx((8.0, 8.0, 8.0))
    truth = tifffile.imread(phantom_tif).astype(np.float32)
    error = np.abs(out.to_numpy().astype(np.float32) - truth)[8:-8].mean()
    assert error < 20  # cubic follows the structure (a misaligned z grid gives > 25)


def test_degrade_along_x_with_gaussian_profile(phantom_tif, tmp_path):
    out = tmp_path / "x.h5"
    result = runner.invoke(
        app,
        [
            "degrade",
            str(phantom_tif),
            f"{out}:/sections",
            "--factor",
            "5",
            "--axis",
            "x",
            "--profile",
            "gaussian",
        ],
    )
    assert result.exit_code == 0, result.output
    low = open_volume(f"{out}:/sections")
    assert low.shape == (48, 40, 8)
    assert low.voxel_size == pytest.approx((8.0, 8.0, 40.0))


def test_bench_writes_table_and_json(phantom_tif, tmp_path):
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            "--data",
            str(phantom_tif),
            "--factors",
            "4",
            "--methods",
            "nearest,cubic",
            "--json",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "| nearest |" in result.stdout and "| cubic |" in result.stdout
    payload = json.loads(out.read_text())
    assert {"results", "command", "machine", "commit"} <= set(payload)
    rows = payload["results"]
    assert [r["method"] for r in rows] == ["nearest", "cubic"]
    keys = {
        "dataset",
        "method",
        "factor",
        "psnr",
        "ssim",
        "frc_xz_nm",
        "consistency_psnr",
        "seconds",
    }
    assert keys <= set(rows[0])
    assert rows[1]["psnr"] > rows[0]["psnr"]
    assert payload["command"].startswith("vemrestore bench --data")


TINY_SKELETON = """method: skeleton
scale_factor: 4
base_channels: 4
depth: 2
halo_yx: 8
train:
  num_steps: 3
  batch_size: 2
  patch_size: 16
  checkpoint_every: 2
  validate_every: 2
"""


@pytest.fixture
def degraded_tif(phantom_tif, tmp_path):
    degraded = tmp_path / "degraded.tif"
    result = runner.invoke(app, ["degrade", str(phantom_tif), str(degraded), "--factor", "4"])
    assert result.exit_code == 0, result.output
    return degraded


def test_train_skeleton_then_predict(degraded_tif, tmp_path):
    config = tmp_path / "skeleton.yaml"
    config.write_text(TINY_SKELETON)
    model = tmp_path / "model"
    result = runner.invoke(
        app,
        [
            "train",
            "skeleton",
            str(degraded_tif),
            "--factor",
            "4",
            "--out",
            str(model),
            "--config",
            str(config),
            "--from-scratch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (model / "config.json").exists() and (model / "weights.pt").exists()
    out = tmp_path / "restored.tif"
    result = runner.invoke(app, ["predict", str(model), str(degraded_tif), str(out)])
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.shape == (48, 40, 40)
    assert restored.voxel_size == pytest.approx((8.0, 8.0, 8.0))


def test_iso_skeleton_one_shot(degraded_tif, tmp_path):
    config = tmp_path / "skeleton.yaml"
    config.write_text(TINY_SKELETON)
    out = tmp_path / "restored.zarr"
    result = runner.invoke(
        app,
        [
            "iso",
            str(degraded_tif),
            str(out),
            "--factor",
            "4",
            "--method",
            "skeleton",
            "--config",
            str(config),
            "--steps",
            "2",
            "--from-scratch",
        ],
    )
    assert result.exit_code == 0, result.output
    assert open_volume(out).shape == (48, 40, 40)


def test_config_with_a_wrong_field_is_one_line(degraded_tif, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(TINY_SKELETON.replace("num_steps: 3", "num_stepz: 3"))
    out = tmp_path / "restored.zarr"
    result = runner.invoke(
        app,
        [
            "iso",
            str(degraded_tif),
            str(out),
            "--factor",
            "4",
            "--method",
            "skeleton",
            "--config",
            str(config),
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "train.num_stepz" in lines[0]
    assert not out.exists()


def test_steps_on_a_method_without_training_is_refused(degraded_tif, tmp_path):
    result = runner.invoke(
        app, ["iso", str(degraded_tif), str(tmp_path / "o.tif"), "--factor", "4", "--steps", "5"]
    )
    assert result.exit_code == 2
    assert "--steps does not apply to method 'cubic'" in result.stderr


def test_train_lateral_then_predict(tmp_path):
    hr = tmp_path / "hr.tif"
    tifffile.imwrite(
        hr,
        em_phantom((4, 112, 112), num_cells=10, rng=2),
        imagej=True,
        resolution=(1 / 5, 1 / 5),
        metadata={"spacing": 50, "unit": "nm", "axes": "ZYX"},
    )
    model = tmp_path / "lateral"
    result = runner.invoke(
        app,
        ["train", "lateral", "--hr", str(hr), "--factor", "2", "--out", str(model), "--steps", "2"],
    )
    assert result.exit_code == 0, result.output
    low = tmp_path / "low.tif"
    tifffile.imwrite(
        low,
        em_phantom((3, 32, 32), num_cells=6, rng=3),
        imagej=True,
        resolution=(1 / 10, 1 / 10),
        metadata={"spacing": 50, "unit": "nm", "axes": "ZYX"},
    )
    out = tmp_path / "sr.tif"
    result = runner.invoke(app, ["predict", str(model), str(low), str(out)])
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.shape == (3, 64, 64)
    assert restored.voxel_size == pytest.approx((50.0, 5.0, 5.0))


def test_killed_iso_resumes_its_training_and_gives_the_same_output(
    degraded_tif, tmp_path, monkeypatch
):
    from vemrestore.train import _loop

    config = tmp_path / "skeleton.yaml"
    config.write_text(TINY_SKELETON)
    args = ["iso", str(degraded_tif), "--factor", "4", "--method", "skeleton"]
    args += ["--config", str(config), "--from-scratch"]
    reference = tmp_path / "reference.tif"
    assert runner.invoke(app, [args[0], args[1], str(reference), *args[2:]]).exit_code == 0

    save = _loop._save_checkpoint

    def save_then_die(path, payload, **options):
        save(path, payload, **options)
        raise RuntimeError("killed after the first checkpoint")

    out = tmp_path / "restored.tif"
    monkeypatch.setattr(_loop, "_save_checkpoint", save_then_die)
    killed = runner.invoke(app, [args[0], args[1], str(out), *args[2:]])
    assert "killed" in str(killed.exception) and not out.exists()
    checkpoints = tmp_path / ".restored.tif.run"
    assert (checkpoints / "checkpoint.pt").exists()

    monkeypatch.setattr(_loop, "_save_checkpoint", save)
    other = runner.invoke(app, [args[0], args[1], str(out), *args[2:], "--steps", "5"])
    assert other.exit_code == 2 and "changed since the interrupted run" in other.stderr

    resumed = runner.invoke(app, [args[0], args[1], str(out), *args[2:]])
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the run" in resumed.stderr
    assert not checkpoints.exists()
    np.testing.assert_array_equal(open_volume(out).to_numpy(), open_volume(reference).to_numpy())
