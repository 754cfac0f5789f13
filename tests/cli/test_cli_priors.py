"""The command line starts the skeleton from its shipped prior; --from-scratch does not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from vemrestore.cli import app
from vemrestore.io import open_volume, write_volume
from vemrestore.methods import priors

runner = CliRunner()
SMALL_TRAIN = "method: skeleton\ntrain:\n  batch_size: 2\n  patch_size: 16\n  validate_every: 1\n"


@pytest.fixture
def thick(tmp_path):
    path = tmp_path / "thick.tif"
    data = (np.random.default_rng(0).random((10, 40, 40)) * 255).astype(np.uint8)
    write_volume(data, path, voxel_size=(40, 10, 10))
    return path


@pytest.fixture
def small_train(tmp_path):
    path = tmp_path / "small.yaml"
    path.write_text(SMALL_TRAIN)
    return path


def test_iso_fine_tunes_the_prior_by_default(thick, small_train, tmp_path):
    out = tmp_path / "iso.tif"
    args = ["iso", str(thick), str(out), "--method", "skeleton", "--steps", "2"]
    result = runner.invoke(app, [*args, "--config", str(small_train)])
    assert result.exit_code == 0, result.output
    assert open_volume(out).shape == (40, 40, 40)


def test_train_records_the_prior_and_from_scratch_does_not(thick, small_train, tmp_path):
    base = ["train", "skeleton", str(thick), "--steps", "2", "--config", str(small_train)]
    assert runner.invoke(app, [*base, "--out", str(tmp_path / "tuned")]).exit_code == 0
    tuned = json.loads((tmp_path / "tuned" / "training.json").read_text())
    assert tuned["prior"]["sha256"] == priors.read_prior("shipped", "skeleton")[0]["sha256"]
    config = json.loads((tmp_path / "tuned" / "config.json").read_text())
    assert config["prior"] == "shipped" and config["space_to_depth"] == 2
    result = runner.invoke(app, [*base, "--out", str(tmp_path / "scratch"), "--from-scratch"])
    assert result.exit_code == 0, result.output
    scratch = json.loads((tmp_path / "scratch" / "training.json").read_text())
    assert "prior" not in scratch


def test_a_missing_prior_is_one_error_line(
    thick, small_train, tmp_path, monkeypatch, assert_refused
):
    monkeypatch.setattr(priors, "shipped_path", lambda name: tmp_path / "gone" / name)
    out = tmp_path / "iso.tif"
    args = ["iso", str(thick), str(out), "--method", "skeleton", "--config", str(small_train)]
    assert_refused(runner.invoke(app, args), "not found", "--from-scratch")
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "fragments"),
    [
        (["--method", "cubic", "--from-scratch"], ["--from-scratch", "no shipped prior"]),
        (["--method", "skeleton", "--config", "ARCH"], ["depth=3", "--from-scratch"]),
    ],
)
def test_options_the_prior_cannot_take_are_refused(
    thick, tmp_path, extra, fragments, assert_refused
):
    arch = tmp_path / "arch.yaml"
    arch.write_text("method: skeleton\ndepth: 3\n")
    extra = [str(arch) if e == "ARCH" else e for e in extra]
    result = runner.invoke(app, ["iso", str(thick), str(tmp_path / "o.tif"), *extra])
    assert_refused(result, *fragments)
