"""CLI of SkelEM: one-shot iso with its maps, train skelem with a given skeleton, predict."""

import json

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
TINY_SKELEM = f"""method: skelem
prior: null
scale_factor: 4
base_channels: 4
depth: 2
halo_yx: 16
halo_sections: 4
pool_size: 8
skeleton:
  prior: null
  base_channels: 4
  depth: 2
  halo_sections: 4
  train:
{TINY_TRAIN.replace("  ", "    ")}
train:
{TINY_TRAIN}
cycle:
  crop_sections: 2
  margin: 4
  num_crops: 2
  train:
{TINY_TRAIN.replace("  ", "    ")}
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
    path = tmp_path / "skelem.yaml"
    path.write_text(TINY_SKELEM)
    return path


def test_iso_skelem_writes_result_consistency_and_std(degraded_tif, config, tmp_path):
    out = tmp_path / "iso.ome.zarr"
    args = ["iso", str(degraded_tif), str(out), "--factor", "4", "--method", "skelem"]
    args += ["--config", str(config), "--sampling-steps", "2", "--samples", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    restored = open_volume(out)
    assert restored.shape == (48, 40, 40) and restored.dtype == np.uint8
    std = open_volume(tmp_path / "iso_std.ome.zarr")
    residual = open_volume(tmp_path / "iso_consistency.ome.zarr")
    assert std.shape == residual.shape == (48, 40, 40)
    assert std.dtype == np.float32
    std = std.to_numpy()
    assert (std >= 0).all() and std.max() > 0  # two seeds differ somewhere
    assert "(std)" in result.stdout and "(consistency)" in result.stdout


def test_one_sample_writes_no_std_map(degraded_tif, config, tmp_path):
    out = tmp_path / "iso.tif"
    args = ["iso", str(degraded_tif), str(out), "--factor", "4", "--method", "skelem"]
    result = runner.invoke(app, [*args, "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert out.exists() and (tmp_path / "iso_consistency.tif").exists()
    assert not (tmp_path / "iso_std.tif").exists()


def test_train_skelem_on_a_given_skeleton_then_predict(degraded_tif, config, tmp_path):
    skeleton_config = tmp_path / "skeleton.yaml"
    skeleton_config.write_text(
        "method: skeleton\nscale_factor: 4\nbase_channels: 4\ndepth: 2\nhalo_sections: 4\n"
        f"train:\n{TINY_TRAIN}"
    )
    skeleton = tmp_path / "skeleton"
    base = [str(degraded_tif), "--factor", "4"]
    args = ["train", "skeleton", *base, "--out", str(skeleton), "--config", str(skeleton_config)]
    result = runner.invoke(app, [*args, "--from-scratch"])
    assert result.exit_code == 0, result.output
    model = tmp_path / "skelem"
    args = ["train", "skelem", *base, "--out", str(model), "--config", str(config)]
    options = ["--skeleton", str(skeleton), "--sampling-steps", "3", "--samples", "2"]
    result = runner.invoke(app, [*args, *options])
    assert result.exit_code == 0, result.output
    saved = (model / "config.json").read_text()
    assert str(skeleton) in saved and '"num_inference_steps": 3' in saved
    out = tmp_path / "restored.tif"
    result = runner.invoke(app, ["predict", str(model), str(degraded_tif), str(out)])
    assert result.exit_code == 0, result.output
    assert open_volume(out).shape == (48, 40, 40)
    # The saved config asks for 2 samples: predict writes both maps, as iso does.
    for tag in ("consistency", "std"):
        assert open_volume(tmp_path / f"restored_{tag}.tif").shape == (48, 40, 40)


@pytest.mark.parametrize("option", ["--samples", "--sampling-steps"])
def test_skelem_options_on_other_methods_are_refused(degraded_tif, tmp_path, option):
    out = tmp_path / "o.tif"
    result = runner.invoke(app, ["iso", str(degraded_tif), str(out), "-k", "4", option, "2"])
    assert result.exit_code == 2
    assert f"{option} does not apply to method 'cubic'" in result.stderr
    assert not out.exists()


def test_factor_overrides_the_config_and_what_derives_from_it(config):
    from vemrestore.api import configure

    method = configure("skelem", factor=8, steps=7, config=config, inference={"num_samples": 3})
    assert method.config.scale_factor == method.config.skeleton.scale_factor == 8
    assert method.config.skeleton.base_channels == 4  # the rest of the file is kept
    cfg = method.config
    assert [t.num_steps for t in (cfg.skeleton.train, cfg.train, cfg.cycle.train)] == [3, 3, 1]
    assert cfg.train.batch_size == 2
    assert method.config.inference.num_samples == 3


def test_killed_while_writing_the_outputs_resumes_without_retraining(
    degraded_tif, config, tmp_path, monkeypatch
):
    import vemrestore.api._commands as commands

    predict_volume = commands.predict_volume
    calls = []

    def die_while_writing(*args, **options):
        calls.append(options["extra_outputs"])
        raise RuntimeError("killed while writing the outputs")

    out = tmp_path / "iso.tif"
    args = ["iso", str(degraded_tif), str(out), "-k", "4", "--method", "skelem"]
    args += ["--config", str(config), "--samples", "2"]
    monkeypatch.setattr(commands, "predict_volume", die_while_writing)
    killed = runner.invoke(app, args)
    assert "killed" in str(killed.exception)
    # The maps are asked for in the same engine pass as the restoration.
    assert sorted(calls[0]) == ["consistency", "std"]
    assert not out.exists() and not (tmp_path / "iso_consistency.tif").exists()
    checkpoints = sorted((tmp_path / ".iso.tif.run").rglob("*.pt"))
    assert checkpoints  # training finished and was kept

    monkeypatch.setattr(commands, "predict_volume", predict_volume)
    resumed = runner.invoke(app, args)
    assert resumed.exit_code == 0, resumed.output
    assert "resuming the run" in resumed.stderr
    for tag in ("consistency", "std"):
        assert (tmp_path / f"iso_{tag}.tif").exists()
    assert not (tmp_path / ".iso.tif.run").exists()

    fresh = tmp_path / "fresh.tif"
    result = runner.invoke(app, [*args[:2], str(fresh), *args[3:]])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(open_volume(out).to_numpy(), open_volume(fresh).to_numpy())


def test_a_failed_start_does_not_block_the_corrected_command(degraded_tif, config, tmp_path):
    out = tmp_path / "iso.tif"
    args = ["iso", str(degraded_tif), str(out), "-k", "4", "--method", "skelem"]
    args += ["--config", str(config)]
    typo = runner.invoke(app, [*args, "--skeleton", str(tmp_path / "no-such-model")])
    assert typo.exit_code == 2 and "no config.json" in typo.stderr
    fixed = runner.invoke(app, args)
    assert fixed.exit_code == 0, fixed.output
    assert out.exists()


def test_skelem_cannot_overwrite_the_skeleton_it_reuses(degraded_tif, tmp_path):
    model = tmp_path / "skeleton"
    model.mkdir()
    args = ["train", "skelem", str(degraded_tif), "-k", "4", "--out", str(model)]
    result = runner.invoke(app, [*args, "--skeleton", str(model)])
    assert result.exit_code == 2 and "is the --skeleton folder" in result.stderr


def test_the_skeleton_stage_starts_from_the_prior_unless_from_scratch(degraded_tif, tmp_path):
    # The file's refiner and skeleton have options the shipped priors were not trained with.
    path = tmp_path / "scratch.yaml"
    path.write_text(TINY_SKELEM.replace("\nprior: null\n", "\n").replace("  prior: null\n", ""))
    model = tmp_path / "skelem"
    args = ["train", "skelem", str(degraded_tif), "-k", "4", "--out", str(model)]
    refused = runner.invoke(app, [*args, "--config", str(path)])
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "base_channels=4 (prior: 16), skeleton.base_channels=4 (prior: 24)" in refused.stderr
    assert "--from-scratch" in refused.stderr and not model.exists()
    trained = runner.invoke(app, [*args, "--config", str(path), "--from-scratch"])
    assert trained.exit_code == 0, trained.output
    skeleton = json.loads((model / "skeleton" / "config.json").read_text())
    assert skeleton["prior"] is None and skeleton["base_channels"] == 4
