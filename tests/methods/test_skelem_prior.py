"""The SkelEM refiner's shipped prior: configured by default, loaded, checked, recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vemrestore import api
from vemrestore.errors import UserInputError
from vemrestore.io import Volume
from vemrestore.methods import priors
from vemrestore.methods.priors import SKELEM_PRIOR, read_prior
from vemrestore.methods.skelem import SkelEM, SkelEMConfig
from vemrestore.methods.skelem.config import REFINER_TRAIN
from vemrestore.methods.skelem.prior import mixed_factor_pool, prior_factors

TINY_TRAIN = {"num_steps": 2, "patch_size": 16, "batch_size": 4, "device": "cpu", "num_threads": 1}
# A tiny skeleton from scratch: these tests are about the refiner.
TINY_SKELETON = {"base_channels": 4, "depth": 2, "halo_sections": 4, "train": TINY_TRAIN}
TINY_CYCLE = {
    "crop_sections": 2,
    "margin": 4,
    "num_crops": 1,
    "train": {"num_steps": 1, "patch_size": 16},
}


@pytest.fixture(scope="module")
def volume() -> Volume:
    return Volume(np.random.default_rng(7).random((12, 48, 48)).astype(np.float32))


def _skelem(**options) -> SkelEM:
    config = {
        "scale_factor": 4.0,
        **SKELEM_PRIOR,
        "skeleton": TINY_SKELETON,
        "pool_size": 16,
        "cycle": None,
        "train": {**TINY_TRAIN, "validate_every": 1},
        **options,
    }
    return SkelEM(SkelEMConfig(**config))


def test_skelem_fine_tunes_the_shipped_refiner_prior_unless_told_otherwise():
    config = api.configure("skelem", factor=4).config
    assert config.prior == "shipped" and config.base_channels == SKELEM_PRIOR["base_channels"]
    assert config.train.learning_rate == priors.SKELEM_FINE_TUNE["learning_rate"]
    assert config.train.patience == priors.SKELEM_FINE_TUNE["patience"]
    assert config.train.patch_size == REFINER_TRAIN["patch_size"]  # the prior's patches
    given = api.configure("skelem", factor=4, train={"num_steps": 30}).config
    assert given.train.num_steps == 30 and given.train.patience == 4  # merged, not replaced
    scratch = api.configure("skelem", factor=4, from_scratch=True).config
    assert scratch.prior is None and scratch.skeleton.prior is None
    assert scratch.train.learning_rate == REFINER_TRAIN["learning_rate"]
    with pytest.raises(UserInputError, match=r"base_channels=8 \(prior: 16\).*--from-scratch"):
        api.configure("skelem", factor=4, base_channels=8)


def test_the_refiner_starts_from_the_prior_and_records_it(volume):
    method = _skelem(prior="shipped").fit(volume, progress=False)
    shipped = read_prior("shipped", "skelem")[0]["sha256"]
    assert method.training_record()["prior"]["sha256"] == shipped
    # Step 0 is the prior, not random weights: its validation loss differs.
    scratch = _skelem().fit(volume, progress=False)
    assert "prior" not in scratch.training_record()
    assert method.train_result.val_losses[0][1] != scratch.train_result.val_losses[0][1]


def test_from_scratch_never_reads_the_refiner_prior(volume, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a prior was read")

    monkeypatch.setattr(priors, "read_prior", refuse)
    method = api.configure(
        "skelem",
        factor=4,
        from_scratch=True,
        skeleton=TINY_SKELETON,
        cycle=TINY_CYCLE,  # configure ignores None options: a cycle of one step
        pool_size=16,
        train=TINY_TRAIN,
    )
    method.fit(volume, progress=False)
    assert method.prior_record is None


def test_a_refiner_prior_of_another_noise_schedule_fails_before_training(volume, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the skeleton trained before the prior was checked")

    monkeypatch.setattr(SkelEM, "_fit_skeleton", refuse)
    method = _skelem(prior="shipped", diffusion={"num_train_timesteps": 500})
    with pytest.raises(UserInputError) as error:
        method.fit(volume, progress=False)
    message = str(error.value)
    assert "\n" not in message and "--from-scratch" in message
    assert "diffusion.num_train_timesteps=1000 (config: 500)" in message


def test_the_prior_pool_scales_each_stack_and_factor_to_unit_rms():
    rng = np.random.default_rng(0)
    stacks = [rng.random((3, 96, 96), dtype=np.float32), rng.random((2, 80, 100), np.float32)]
    factors = prior_factors(2.0, 6.0, 2)
    with torch.random.fork_rng(devices=[]):
        cond, residual = mixed_factor_pool(stacks, factors, counts=[5, 3], patch_size=32, seed=1)
    assert cond.shape == (16, 2, 32, 32) and residual.shape == (16, 1, 32, 32)
    chunks = np.split(residual, np.cumsum([5, 3, 5])[:])  # (factor, stack) in order
    for chunk in chunks:
        np.testing.assert_allclose(np.sqrt(np.mean(chunk.astype(np.float64) ** 2)), 1.0, 1e-4)
    again = mixed_factor_pool(stacks, factors, counts=[5, 3], patch_size=32, seed=1)
    np.testing.assert_array_equal(again[1], residual)


def test_a_config_file_with_prior_null_trains_only_the_refiner_from_scratch(tmp_path):
    path = tmp_path / "refiner_scratch.yaml"
    path.write_text("method: skelem\nprior: null\n")
    config = api.configure("skelem", factor=4, config=path).config
    assert config.prior is None and config.train.learning_rate == REFINER_TRAIN["learning_rate"]
    assert config.skeleton.prior == "shipped"  # the skeleton keeps its own prior
    with pytest.raises(UserInputError, match="from_scratch together with prior='shipped'"):
        api.configure("skelem", factor=4, from_scratch=True, prior="shipped")


def test_a_factor_outside_the_refiner_prior_range_warns(volume, monkeypatch):
    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(SkelEM, "_fit_skeleton", stop)
    with pytest.warns(UserWarning, match="outside the range 2-12"), pytest.raises(Stop):
        _skelem(prior="shipped", scale_factor=16.0).fit(volume, progress=False)
