"""Tests of SkelEM: frozen skeleton + few-step diffusion refiner with cycle consistency."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter
from torch.optim.optimizer import register_optimizer_step_post_hook

from vemrestore.degrade import AxialSectioning, sectioning_matrix
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, open_volume
from vemrestore.methods import (
    BlockRequest,
    available_methods,
    create_method,
    load_config,
    load_method,
    save_config,
)
from vemrestore.methods.skelem import (
    SkelEM,
    SkelEMConfig,
    SkelEMInference,
    consistency_correction,
    keyed_normal,
)
from vemrestore.methods.skeleton import Skeleton, SkeletonConfig
from vemrestore.metrics import data_consistency_psnr
from vemrestore.models.cond_unet import ConditionalUNet2D

FACTOR = 4
TINY_TRAIN = {"num_steps": 4, "patch_size": 16, "batch_size": 4, "device": "cpu", "num_threads": 1}
TINY_SKELETON = {"base_channels": 4, "depth": 2, "halo_sections": 4, "train": TINY_TRAIN}
TINY_CYCLE = {
    "crop_sections": 2,
    "margin": 4,
    "num_crops": 2,
    "train": {**TINY_TRAIN, "num_steps": 2, "batch_size": 1, "validate_every": 2},
}
TINY = {
    "base_channels": 4,
    "depth": 2,
    "halo_sections": 4,
    "pool_size": 16,
    "inference": {"halo": 16, "batch_size": 64},
    "train": TINY_TRAIN,
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two torch threads on a busy 2-core machine ran these tests many times slower.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def sections() -> np.ndarray:
    """Synthetic smooth volume (64^3) sectioned by 4 along z: shape (16, 64, 64)."""
    fine = gaussian_filter(np.random.default_rng(0).random((64, 64, 64)), 2) * 100
    return AxialSectioning(FACTOR).apply(fine)[0]


@pytest.fixture(scope="module")
def skeleton_dir(sections, tmp_path_factory):
    """A tiny skeleton trained on the sections and saved."""
    path = tmp_path_factory.mktemp("skeleton")
    Skeleton(SkeletonConfig(scale_factor=FACTOR, **TINY_SKELETON)).fit(
        Volume(sections), progress=False
    ).save(path)
    return path


@pytest.fixture(scope="module")
def trained(sections, skeleton_dir) -> SkelEM:
    method = create_method(
        "skelem", scale_factor=FACTOR, skeleton_path=skeleton_dir, cycle=TINY_CYCLE, **TINY
    )
    return method.fit(Volume(sections), progress=False)


def _perturbed(method: SkelEM, std: float = 0.1) -> SkelEM:
    """A copy whose refiners have random weights, so the residual is far from zero."""
    copy = pickle.loads(pickle.dumps(method))
    torch.manual_seed(1)
    for net in copy.networks.values():
        for p in net.parameters():
            torch.nn.init.normal_(p, std=std)
    return copy


def _predict_outputs(method, sections, region, outputs) -> dict[str, np.ndarray]:
    """The arrays ``outputs`` of ``region`` from one ``predict_block`` call."""
    where = method.input_region(region, sections.shape)
    start = tuple(s.start for s in where)
    return method.predict_block(sections[where], BlockRequest(start, region, outputs))


def _predict(method, sections, region=None, output="restored") -> np.ndarray:
    if region is None:
        region = tuple(slice(0, s) for s in method.output_shape(sections.shape))
    return _predict_outputs(method, sections, region, (output,))[output]


class _CallCounter:
    """Counts forward calls of the refiners and records their timesteps."""

    def __init__(self, method: SkelEM) -> None:
        self.calls, self.timesteps = 0, []
        self.handles = [
            net.register_forward_pre_hook(self._hook) for net in method.networks.values()
        ]

    def _hook(self, module, args) -> None:
        self.calls += 1
        self.timesteps.append(int(args[1].reshape(-1)[0]))

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def test_registered_and_created_with_defaults():
    assert "skelem" in available_methods()
    method = create_method("skelem", scale_factor=8)
    assert isinstance(method, SkelEM)
    inference = method.config.inference
    assert inference.num_inference_steps == 4 and inference.mode == "truncated"
    assert method.config.skeleton_config().scale_factor == 8
    assert method.output_shape((10, 20, 30)) == (80, 20, 30)
    assert method.output_voxel_size((80.0, 10.0, 10.0)) == (10.0, 10.0, 10.0)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"skeleton": {"scale_factor": 8}}, "skeleton.scale_factor"),
        ({"skeleton": {"profile": "gaussian"}}, "skeleton.profile"),
        ({"skeleton": {}, "skeleton_path": "x"}, "skeleton_path"),
        ({"depth": 3, "train": {"patch_size": 20}}, "patch_size"),
        ({"num_steps": 400, "strength": 0.3}, "num_inference_steps"),
        ({"mode": "fast"}, "mode"),
        ({"cycle": {"crop_size": 3}}, "crop_size"),
        ({"diffusion": {"prediction_type": "x0"}}, "prediction_type"),
    ],
)
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        SkelEMConfig(scale_factor=4, **options)


def test_yaml_round_trip_and_nested_skeleton(tmp_path):
    config = SkelEMConfig(
        scale_factor=8,
        profile="gaussian",
        skeleton={"base_channels": 8},
        diffusion={"prediction_type": "sample", "num_train_timesteps": 500},
        num_samples=3,
        cycle=None,
    )
    assert config.skeleton.scale_factor == 8 and config.skeleton.profile == "gaussian"
    save_config(config, tmp_path / "skelem.yaml")
    assert load_config(tmp_path / "skelem.yaml") == config


def test_frozen_skeleton_weights_are_unchanged_by_refiner_and_cycle_training(trained, skeleton_dir):
    before = torch.load(skeleton_dir / "weights.pt", weights_only=True)
    after = trained.skeleton.model.state_dict()
    assert before.keys() == after.keys()
    for name, value in before.items():
        assert torch.equal(value, after[name].cpu()), name
    assert not any(p.requires_grad for p in trained.skeleton.model.parameters())
    # The refiners did train, and the two orientations differ after cycle fine-tuning.
    assert trained.train_result.steps == TINY_TRAIN["num_steps"]
    assert trained.cycle_result.steps == TINY_CYCLE["train"]["num_steps"]
    xz, yz = (trained.networks[n].state_dict() for n in ("xz", "yz"))
    assert any(not torch.equal(xz[k], yz[k]) for k in xz)


def test_skeleton_trained_in_fit_stays_frozen_during_cycle(sections):
    method = create_method(
        "skelem", scale_factor=FACTOR, skeleton=TINY_SKELETON, cycle=TINY_CYCLE, **TINY
    )
    method.fit_refiner(Volume(sections), progress=False)
    assert method.skeleton.train_result.steps == TINY_TRAIN["num_steps"]
    before = {k: v.clone() for k, v in method.skeleton.model.state_dict().items()}
    method.fit_cycle(Volume(sections), progress=False)
    for name, value in method.skeleton.model.state_dict().items():
        assert torch.equal(before[name], value), name


@pytest.mark.parametrize("steps", [1, 3, 4])
def test_truncated_sampling_makes_exactly_num_steps_refiner_calls(trained, sections, steps):
    method = trained.with_inference(num_inference_steps=steps, strength=0.3)
    counter = _CallCounter(method)
    try:
        region = (slice(16, 48), slice(8, 40), slice(20, 52))
        _predict(method, sections, region)
    finally:
        counter.remove()
    # One batch of planes per orientation (inference.batch_size=64): XZ then YZ.
    assert counter.calls == 2 * steps
    per_plane = counter.timesteps[:steps]
    assert per_plane == sorted(per_plane, reverse=True)
    assert per_plane[0] <= 0.3 * 1000 + 80  # starts near t0 = strength * T, not at T
    assert per_plane[-1] <= 1000 / round(steps / 0.3)  # the step size of that schedule


def test_full_mode_starts_from_pure_noise(trained, sections):
    method = trained.with_inference(mode="full", num_inference_steps=5, num_samples=2)
    counter = _CallCounter(method)
    try:
        _predict(method, sections, (slice(16, 48), slice(8, 24), slice(20, 36)))
    finally:
        counter.remove()
    assert counter.calls == 2 * 5 * 2  # orientations x steps x samples
    assert counter.timesteps[0] == 999


def test_same_seed_gives_the_same_output(trained, sections):
    method = _perturbed(trained)
    region = (slice(16, 32), slice(8, 24), slice(20, 36))
    first = _predict(method, sections, region)
    np.testing.assert_array_equal(_predict(method, sections, region), first)
    np.testing.assert_array_equal(
        _predict(pickle.loads(pickle.dumps(method)), sections, region), first
    )
    other = _predict(method.with_inference(seed=1), sections, region)
    assert np.abs(other - first).max() > 1e-3


def test_zero_x0_refiner_gives_the_skeleton(trained, sections, skeleton_dir):
    # A refiner predicting x0 = 0 (untrained: its output layer is zero) adds nothing
    # (up to the noise left at the last DDIM level, t = 0, scaled away here).
    diffusion = trained.config.diffusion.model_copy(update={"prediction_type": "sample"})
    inference = trained.config.inference.model_copy(update={"consistency_projection": False})
    config = trained.config.model_copy(update={"diffusion": diffusion, "inference": inference})
    method = SkelEM(config)
    method.set_trained(
        {n: ConditionalUNet2D(1, 2, 1, base_channels=4, depth=2) for n in ("xz", "yz")},
        skeleton=trained.skeleton,
        residual_scale=1e-3,
    )
    skeleton = load_method(skeleton_dir)
    skeleton.config.inference.halo = method.config.inference.halo
    region = (slice(0, 32), slice(16, 48), slice(8, 40))
    expected = _predict(skeleton, sections, region)
    np.testing.assert_allclose(_predict(method, sections, region), expected, atol=1e-3)


def test_projection_reproduces_the_observation_and_the_residual_map_explains_it(trained, sections):
    method = _perturbed(trained)
    region = (slice(16, 48), slice(8, 40), slice(20, 52))  # sections 4..11
    raw = _predict(method.with_inference(consistency_projection=False), sections, region)
    maps = _predict_outputs(method, sections, region, ("restored", "consistency"))
    projected, residual = maps["restored"], maps["consistency"]
    observed = sections[4:12, 8:40, 20:52]
    sectioning = AxialSectioning(FACTOR)
    span = float(np.ptp(sections))
    raw_db = data_consistency_psnr(observed, raw, sectioning, data_range=span)
    projected_db = data_consistency_psnr(observed, projected, sectioning, data_range=span)
    assert projected_db > 80 and projected_db > raw_db + 20
    np.testing.assert_allclose(projected, raw + residual, atol=1e-3)


def test_uncertainty_is_zero_for_one_sample_and_positive_for_several(trained, sections):
    method = _perturbed(trained)
    region = (slice(16, 48), slice(8, 24), slice(20, 36))
    single = _predict(method, sections, region, "std")
    assert single.shape == (32, 16, 16) and np.all(single == 0)
    several = method.with_inference(num_samples=3)
    maps = _predict_outputs(several, sections, region, ("std", "restored"))
    std = maps["std"]
    assert std.dtype == np.float32 and std.min() >= 0 and std.mean() > 1e-3
    mean = maps["restored"]
    one = _predict(method, sections, region)
    assert np.abs(mean - one).max() > 0  # averages three samples, not one


def test_all_outputs_come_from_one_sampling_pass(trained, sections):
    method = _perturbed(trained).with_inference(num_samples=2, num_inference_steps=3)
    assert trained.outputs == ("restored", "consistency")
    assert method.outputs == ("restored", "consistency", "std")
    region = (slice(16, 48), slice(8, 24), slice(20, 36))
    counter = _CallCounter(method)
    try:
        maps = _predict_outputs(method, sections, region, method.outputs)
    finally:
        counter.remove()
    # Orientations x samples x steps (one batch of planes each), not again per output.
    assert counter.calls == 2 * 2 * 3
    assert set(maps) == set(method.outputs)
    for name in method.outputs:
        assert maps[name].shape == (32, 16, 16) and maps[name].dtype == np.float32
        np.testing.assert_array_equal(maps[name], _predict(method, sections, region, name))
    assert maps["std"].min() >= 0 and maps["std"].mean() > 1e-3
    assert np.abs(maps["consistency"]).max() > 0
    with pytest.raises(ValueError, match="no outputs"):
        _predict(method, sections, region, "variance")


OLD_OPTIONS = {
    "method": "skelem",
    "scale_factor": FACTOR,
    "num_steps": 6,
    "strength": 0.5,
    "sample_seed": 7,
    "num_samples": 2,
    "mode": "truncated",
    "consistency_projection": False,
    "halo_yx": 20,
    "planes_per_batch": 16,
    "output": "mean",
    "train": {"num_steps": 3, "device": "cpu"},
}


def test_old_option_names_load_into_the_inference_options():
    config = SkelEMConfig.model_validate(OLD_OPTIONS)
    assert config.inference == SkelEMInference(
        num_inference_steps=6,
        strength=0.5,
        seed=7,
        num_samples=2,
        mode="truncated",
        consistency_projection=False,
        halo=20,
        batch_size=16,
        device="cpu",
    )
    assert config.train.num_steps == 3  # num_steps inside train stays the training length
    assert "output" not in config.model_dump()
    assert SkelEMConfig.model_validate({**OLD_OPTIONS, "output": "std"}) == config
    with pytest.raises(ValidationError, match="contradicts"):
        SkelEMConfig.model_validate({**OLD_OPTIONS, "inference": {"seed": 1}})


def test_a_model_saved_with_the_old_option_names_still_loads(trained, sections, tmp_path):
    method = _perturbed(trained).with_inference(num_samples=2, seed=3)
    path = tmp_path / "model"
    method.save(path)
    assert set(torch.load(path / "weights.pt", weights_only=True)) == {"xz", "yz"}
    assert set(json.loads((path / "refiner.json").read_text())) == {
        "model",
        "residual_scale",
        "skeleton_error",
        "strength_matched",
    }
    # Rewrite config.json as the code before the training/inference split wrote it.
    config = json.loads((path / "config.json").read_text())
    inference = config.pop("inference")
    old_names = {
        "num_inference_steps": "num_steps",
        "seed": "sample_seed",
        "halo": "halo_yx",
        "batch_size": "planes_per_batch",
    }
    for name in ("mode", "strength", "num_samples", "consistency_projection", *old_names):
        config[old_names.get(name, name)] = inference[name]
    config["output"] = "std"
    (path / "config.json").write_text(json.dumps(config))
    loaded = load_method(path)
    assert isinstance(loaded, SkelEM) and loaded.config == method.config
    region = (slice(16, 32), slice(8, 24), slice(20, 36))
    expected = _predict_outputs(method, sections, region, method.outputs)
    got = _predict_outputs(loaded, sections, region, loaded.outputs)
    for name in method.outputs:
        np.testing.assert_array_equal(got[name], expected[name])


@pytest.mark.parametrize(("output", "num_samples"), [("restored", 1), ("std", 2)])
def test_engine_blockwise_matches_the_whole_array(trained, sections, tmp_path, output, num_samples):
    from vemrestore.engine import predict_array, predict_volume

    method = _perturbed(trained, std=0.05).with_inference(num_samples=num_samples, halo=24)
    part = np.ascontiguousarray(sections[:8, :40, :40])
    whole = predict_array(method, part, outputs=(output,))[output]
    extra = {} if output == "restored" else {output: tmp_path / f"out_{output}.zarr"}
    predict_volume(
        method,
        Volume(part, voxel_size=(40.0, 10.0, 10.0)),
        tmp_path / "out.zarr",
        extra_outputs=extra,
        block_shape=(16, 24, 24),
        num_workers=1,
        progress=False,
    )
    blocks = open_volume(extra.get(output, tmp_path / "out.zarr")).to_numpy()
    scale = np.abs(whole).max()
    assert scale > 0
    assert np.abs(blocks - whole).max() < 0.02 * scale


def test_save_load_and_pickle_round_trips(trained, sections, tmp_path):
    method = _perturbed(trained)
    method.save(tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {
        "config.json",
        "weights.pt",
        "refiner.json",
        "scheduler_config.json",
        "skeleton",
    } <= names
    loaded = load_method(tmp_path / "model")
    assert isinstance(loaded, SkelEM) and loaded.config == method.config
    region = (slice(16, 48), slice(8, 40), slice(20, 52))
    expected = _predict(method, sections, region)
    np.testing.assert_array_equal(_predict(loaded, sections, region), expected)
    trained.save(tmp_path / "trained")
    assert (tmp_path / "trained" / "training.json").is_file()
    (tmp_path / "model" / "weights.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserInputError, match=r"weights\.pt"):
        load_method(tmp_path / "model")


def test_user_errors(trained, sections, tmp_path):
    method = create_method("skelem", scale_factor=FACTOR, **TINY)
    with pytest.raises(UserInputError, match="not trained"):
        _predict(method, sections)
    with pytest.raises(UserInputError, match="inference options only"):
        trained.with_inference(base_channels=8)
    no_cycle = trained.with_inference()
    no_cycle.config.cycle = None
    with pytest.raises(UserInputError, match=r"config\.cycle is None"):
        no_cycle.fit_cycle(Volume(sections), progress=False)
    create_method("cubic", scale_factor=FACTOR).save(tmp_path / "cubic")
    wrong = create_method("skelem", scale_factor=FACTOR, skeleton_path=tmp_path / "cubic", **TINY)
    with pytest.raises(UserInputError, match="not a skeleton"):
        wrong.fit(Volume(sections), progress=False)
    trained.skeleton.save(tmp_path / "skeleton4")
    eight = create_method("skelem", scale_factor=8, skeleton_path=tmp_path / "skeleton4", **TINY)
    with pytest.raises(UserInputError, match="scale factor 4"):
        eight.fit(Volume(sections), progress=False)
    big_crop = trained.with_inference()
    big_crop.config.cycle = {"crop_sections": 20, "train": TINY_TRAIN}
    with pytest.raises(UserInputError, match=r"cycle\.crop_sections"):
        big_crop.fit_cycle(Volume(sections), progress=False)


@pytest.mark.realdata
def test_cycle_consistency_loss_decreases_on_a_real_crop(medulla_crop):
    sections, _ = AxialSectioning(FACTOR).apply(medulla_crop)
    cycle = {
        "crop_sections": 3,
        "margin": 4,
        "num_crops": 2,
        "anchor_weight": 0.0,
        "train": {
            **TINY_TRAIN,
            "num_steps": 12,
            "batch_size": 1,
            "learning_rate": 2e-3,
            "lr_schedule": "constant",
            "validate_every": 12,
        },
    }
    method = create_method(
        "skelem",
        scale_factor=FACTOR,
        skeleton={**TINY_SKELETON, "train": {**TINY_TRAIN, "num_steps": 20}},
        cycle=cycle,
        **{**TINY, "train": {**TINY_TRAIN, "num_steps": 20}},
    )
    method.fit(Volume(sections), progress=False)
    (_, before), (_, after) = method.cycle_result.val_losses
    assert after < before
    first, last = method.cycle_terms
    assert last["consistency"] + last["cross_plane"] < first["consistency"] + first["cross_plane"]


def test_keyed_normal_is_standard_normal_and_depends_on_every_key():
    noise = keyed_normal(3, 0, 1, np.arange(8), np.arange(64), np.arange(256))
    assert noise.shape == (8, 1, 64, 256) and noise.dtype == np.float32
    assert abs(noise.mean()) < 0.02 and abs(noise.std() - 1) < 0.02
    base = keyed_normal(3, 0, 1, np.arange(2), np.arange(4), np.arange(4))
    for args in [(4, 0, 1), (3, 1, 1), (3, 0, 0)]:
        other = keyed_normal(*args, np.arange(2), np.arange(4), np.arange(4))
        assert not np.allclose(other, base)


@pytest.mark.parametrize(("factor", "profile"), [(4, "box"), (2.5, "box"), (3, "gaussian")])
def test_consistency_correction_makes_the_estimate_reproduce_the_observation(factor, profile):
    rng = np.random.default_rng(0)
    weights = sectioning_matrix(30, factor, profile=profile)
    estimate = rng.random((30, 5))
    observed = rng.random((weights.shape[0], 5))
    corrected = estimate + consistency_correction(estimate, observed, weights)
    np.testing.assert_allclose(weights @ corrected, observed, atol=1e-5)
    # Already consistent: nothing changes; an empty set of sections changes nothing.
    again = consistency_correction(corrected, observed, weights)
    np.testing.assert_allclose(again, 0, atol=1e-5)
    assert np.all(consistency_correction(estimate, observed[:0], weights[:0]) == 0)


# ------------------------------------------------------------ a budget of training steps


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {"skeleton": 50, "refiner": 40, "cycle": 10}),
        ({"skeleton_path": "skeleton"}, {"refiner": 80, "cycle": 20}),
        ({"cycle": None}, {"skeleton": 56, "refiner": 44}),
    ],
)
def test_a_step_budget_splits_across_the_stages_fit_trains(options, expected):
    config = SkelEMConfig(scale_factor=8, **options)
    budgeted = config.with_step_budget(100)
    found = {"refiner": budgeted.train.num_steps}
    if budgeted.skeleton is not None:
        found["skeleton"] = budgeted.skeleton.train.num_steps
        assert budgeted.skeleton.scale_factor == 8
    if budgeted.cycle is not None:
        found["cycle"] = budgeted.cycle.train.num_steps
    assert found == expected
    # Only the step counts change; without a budget the defaults stay as they were.
    assert budgeted.train.learning_rate == config.train.learning_rate == 1e-3
    assert config.skeleton is None and config.train.num_steps == 1500
    assert config.skeleton_config().train == SkeletonConfig(scale_factor=8).train


@pytest.mark.parametrize("steps", [3, 4, 5, 7, 12, 101, 999])
def test_a_step_budget_is_spent_exactly_with_a_step_for_every_stage(steps):
    budgeted = SkelEMConfig(scale_factor=4).with_step_budget(steps)
    counts = [budgeted.skeleton.train.num_steps, budgeted.train.num_steps]
    counts.append(budgeted.cycle.train.num_steps)
    assert sum(counts) == steps and min(counts) >= 1


def test_a_step_budget_smaller_than_the_stages_is_refused():
    with pytest.raises(UserInputError, match=r"at least 3"):
        SkelEMConfig(scale_factor=4).with_step_budget(2)
    with pytest.raises(UserInputError, match=r"at least 2"):
        SkelEMConfig(scale_factor=4, skeleton_path="s").with_step_budget(1)


def test_a_budget_of_12_steps_bounds_all_stages_and_each_has_its_own_bar(sections, monkeypatch):
    import vemrestore.methods._trained as trained_module

    real_fit_model, calls = trained_module.fit_model, []

    def recording_fit_model(*args, **kwargs):
        result = real_fit_model(*args, **kwargs)
        calls.append((kwargs.get("description"), result.steps))
        return result

    monkeypatch.setattr(trained_module, "fit_model", recording_fit_model)
    optimiser_steps = []
    handle = register_optimizer_step_post_hook(lambda *_: optimiser_steps.append(1))
    try:
        config = SkelEMConfig(
            scale_factor=FACTOR, skeleton=TINY_SKELETON, cycle=TINY_CYCLE, **TINY
        ).with_step_budget(12)
        method = SkelEM(config).fit(Volume(sections), progress=False)
    finally:
        handle.remove()
    results = [method.skeleton.train_result, method.train_result, method.cycle_result]
    assert [r.steps for r in results] == [6, 5, 1]
    assert sum(len(r.history) for r in results) <= 12
    assert len(optimiser_steps) <= 12
    assert calls == [("skeleton", 6), ("refiner", 5), ("cycle", 1)]


def test_a_given_skeleton_is_not_retrained_within_a_budget(sections, skeleton_dir):
    config = SkelEMConfig(
        scale_factor=FACTOR, skeleton_path=skeleton_dir, cycle=TINY_CYCLE, **TINY
    ).with_step_budget(5)
    assert config.skeleton is None
    assert (config.train.num_steps, config.cycle.train.num_steps) == (4, 1)


def test_the_steps_option_is_a_budget_for_every_stage():
    from vemrestore import api

    config = api.configure("skelem", factor=4, steps=12).config
    stages = (config.skeleton.train, config.train, config.cycle.train)
    assert [t.num_steps for t in stages] == [6, 5, 1]
    given = api.configure("skelem", factor=4, steps=12, skeleton_path="model").config
    assert given.skeleton is None
    assert (given.train.num_steps, given.cycle.train.num_steps) == (10, 2)


def test_skelem_trains_on_a_skeleton_with_the_prior_layout(sections, tmp_path):
    # A skeleton fine-tuned from the shipped prior has a factor channel and folds 2x2
    # pixels into channels: the refiner's training pairs must be drawn the same way.
    layout = {**TINY_SKELETON, "space_to_depth": 2, "factor_input": True}
    Skeleton(SkeletonConfig(scale_factor=FACTOR, **layout)).fit(
        Volume(sections), progress=False
    ).save(tmp_path / "skeleton")
    method = create_method(
        "skelem",
        scale_factor=FACTOR,
        skeleton_path=tmp_path / "skeleton",
        cycle=TINY_CYCLE,
        **TINY,
    ).fit(Volume(sections), progress=False)
    region = (slice(16, 48), slice(8, 40), slice(20, 52))
    restored = _predict_outputs(method, sections, region, ("restored",))["restored"]
    assert restored.shape == (32, 32, 32) and np.isfinite(restored).all()


def test_the_truncated_start_is_matched_to_the_skeletons_error(trained, tmp_path):
    from vemrestore.methods.skelem.refiner import matched_strength, truncated_start

    cfg = trained.config
    assert SkelEMConfig(scale_factor=FACTOR).inference.strength is None  # chosen at training
    assert trained.skeleton_error > 0
    expected = matched_strength(cfg.diffusion, 4, trained.skeleton_error)
    assert cfg.inference.strength == expected
    # The start's noise level sigma = sqrt((1 - a) / a) is the nearest to the error.
    alpha_bar = _alpha_bar(cfg)
    sigma = float(
        np.sqrt((1 - alpha_bar) / alpha_bar)[truncated_start(cfg.diffusion, cfg.inference)]
    )
    for other in (expected * 0.8, min(1.0, expected * 1.25)):
        start = truncated_start(cfg.diffusion, cfg.inference.model_copy(update={"strength": other}))
        other_sigma = float(np.sqrt((1 - alpha_bar) / alpha_bar)[start])
        assert abs(np.log(sigma / trained.skeleton_error)) <= abs(
            np.log(other_sigma / trained.skeleton_error)
        )
    # A larger error starts noisier; the chosen strength is saved with the model.
    assert matched_strength(cfg.diffusion, 4, 3.0) > matched_strength(cfg.diffusion, 4, 0.3)
    trained.save(tmp_path / "model")
    assert load_method(tmp_path / "model").config.inference.strength == expected
    with pytest.raises(UserInputError, match="chosen when the refiner is trained"):
        truncated_start(cfg.diffusion, SkelEMInference())


def test_a_matched_strength_follows_the_steps_and_a_new_fit(trained, sections):
    from vemrestore.methods.skelem.refiner import matched_strength

    error, diffusion = trained.skeleton_error, trained.config.diffusion
    assert trained.strength_matched
    # A fresh config's inference options (strength None) keep the match, at their steps.
    again = trained.with_inference(**SkelEMInference(num_inference_steps=3).model_dump())
    assert again.config.inference.strength == matched_strength(diffusion, 3, error)
    assert again.strength_matched
    fixed = trained.with_inference(strength=0.2)
    assert fixed.config.inference.strength == 0.2 and not fixed.strength_matched
    # Fitted again, a matched strength is matched to the new fit, a given one kept.
    refit = pickle.loads(pickle.dumps(trained))
    refit.skeleton_error = None
    refit.config = refit.config.model_copy(
        update={"inference": refit.config.inference.model_copy(update={"strength": 0.9})}
    )
    refit.fit_refiner(Volume(sections), progress=False)
    assert refit.config.inference.strength == trained.config.inference.strength
    assert fixed.fit_refiner(Volume(sections), progress=False).config.inference.strength == 0.2
    # Too many steps are refused when the config is made, not after training.
    with pytest.raises(ValidationError, match="num_inference_steps=2000 needs 2000"):
        SkelEMConfig(scale_factor=FACTOR, inference={"num_inference_steps": 2000})
    # A model saved before strengths were matched has no error to match to.
    old = pickle.loads(pickle.dumps(trained))
    old.skeleton_error = None
    with pytest.raises(UserInputError, match=r"give inference\.strength"):
        old.with_inference(strength=None)


def test_a_partial_train_mapping_keeps_the_refiner_defaults():
    from vemrestore.methods.skelem.config import REFINER_TRAIN
    from vemrestore.train import TrainConfig

    config = SkelEMConfig(scale_factor=FACTOR, train={"num_steps": 7})
    assert config.train == TrainConfig(**{**REFINER_TRAIN, "num_steps": 7})


def test_a_given_strength_is_kept(sections, skeleton_dir):
    method = create_method(
        "skelem",
        scale_factor=FACTOR,
        skeleton_path=skeleton_dir,
        cycle=None,
        **{**TINY, "inference": {**TINY["inference"], "strength": 0.3}},
    )
    assert method.fit(Volume(sections), progress=False).config.inference.strength == 0.3


def _alpha_bar(config: SkelEMConfig) -> np.ndarray:
    from vemrestore.diffusion import make_scheduler

    return make_scheduler(config.diffusion).alphas_cumprod.double().numpy()
