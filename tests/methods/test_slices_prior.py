"""The shipped slices-diffusion prior: fine-tuned by default, ignored with from_scratch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter
from typer.testing import CliRunner

from vemrestore._shipped import sha256_file
from vemrestore.api._slices import _diffusion_options, prepare_slices
from vemrestore.cli import app
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, write_volume
from vemrestore.methods import priors

FEW_STEPS = {"num_steps": 2, "batch_size": 2, "patch_size": 32, "validate_every": 1}


@pytest.fixture(scope="module")
def stack() -> np.ndarray:
    """Smooth random structure (12, 48, 48), 8-bit values as float32."""
    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.random((12, 48, 48)), (1, 2, 2))
    return np.round((vol - vol.min()) / np.ptp(vol) * 255).astype(np.float32)


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_diffusion_fine_tunes_the_shipped_prior_by_default(stack, caplog):
    # Section 4 is damaged, so validation section 5 has no context: the fine-tune's
    # early stopping gives way to training all its steps.
    with caplog.at_level("WARNING"):
        method, report = prepare_slices(
            Volume(stack), missing=[4], options={"train": FEW_STEPS}, progress=False
        )
    assert "training 2 steps without validation" in caplog.text
    shipped = priors.prior_weights_path("shipped", "slices-diffusion")
    assert method.config.prior == "shipped"
    assert method.config.estimate == priors.SLICES_PRIOR["estimate"]
    assert method.training_record()["prior"]["sha256"] == sha256_file(shipped)
    assert report.training["steps"] == FEW_STEPS["num_steps"]


def test_from_scratch_never_reads_the_prior(stack, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the prior was read")

    monkeypatch.setattr(priors, "read_prior", refuse)
    tiny = {"base_channels": 4, "attention_heads": 2, "depth": 1}
    method, _ = prepare_slices(
        Volume(stack),
        missing=[4],
        options={**tiny, "train": {**FEW_STEPS, "patch_size": 16}},
        progress=False,
        from_scratch=True,
    )
    assert method.config.prior is None
    assert method.training_record().get("prior") is None


def test_options_the_prior_was_not_trained_with_are_one_clear_error(stack):
    with pytest.raises(UserInputError, match=r"base_channels=8 \(prior: 16\)") as error:
        prepare_slices(Volume(stack), missing=[4], options={"base_channels": 8}, progress=False)
    assert "--from-scratch" in str(error.value) and "\n" not in str(error.value)


def test_from_scratch_with_a_method_that_does_not_train_exits_2(stack, tmp_path):
    src = write_volume(stack, tmp_path / "stack.tif", voxel_size=(50, 4, 4))
    out = tmp_path / "out.tif"
    args = ["slices", str(src), str(out), "--missing", "4", "--method", "flow", "--from-scratch"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "--from-scratch does not apply to slice method 'flow'" in result.stderr
    assert not out.exists()


def test_a_prior_given_by_path_fine_tunes_like_the_shipped_one(stack, monkeypatch):
    shipped = str(priors.prior_weights_path("shipped", "slices-diffusion"))
    seen = {}

    def capture(network, prior, method):
        seen["prior"] = prior
        raise UserInputError("stop before training")

    monkeypatch.setattr("vemrestore.methods.slices.diffusion.apply_prior", capture)
    with pytest.raises(UserInputError, match="stop before training"):
        prepare_slices(Volume(stack), missing=[4], options={"prior": shipped}, progress=False)
    assert seen["prior"] == shipped


def test_the_fine_tune_keeps_its_early_stopping_under_given_train_options():
    tuned = _diffusion_options({"train": {"num_steps": 7}}, 0, None, from_scratch=False)
    assert tuned["train"] == {**priors.SLICES_FINE_TUNE, "num_steps": 7, "seed": 0}
    scratch = _diffusion_options({"prior": None}, 0, None, from_scratch=False)
    assert "patience" not in scratch["train"] and scratch["prior"] is None


@pytest.mark.parametrize("clash", ["prior", "model-dir"])
def test_from_scratch_with_a_prior_or_a_saved_model_is_one_clear_error(stack, tmp_path, clash):
    options, model_dir = {}, None
    if clash == "prior":
        options = {"prior": "shipped"}
    else:
        model_dir = tmp_path / "model"
        model_dir.mkdir()
        (model_dir / "config.json").write_text("{}")
    with pytest.raises(UserInputError, match=r"from.scratch") as error:
        prepare_slices(
            Volume(stack),
            missing=[4],
            options=options,
            model_dir=model_dir,
            from_scratch=True,
            progress=False,
        )
    assert "\n" not in str(error.value)
