"""The shipped skeleton prior: its record, loading, factor conditioning and fine-tuning."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch

from vemrestore import api
from vemrestore._shipped import sha256_file
from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.io import Volume, write_volume
from vemrestore.methods import priors
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.methods.priors import SKELETON_PRIOR, apply_prior, read_prior
from vemrestore.methods.skeleton import Skeleton, SkeletonConfig, factor_code
from vemrestore.methods.skeleton_prior import MixedFactorSampler, shipped_skeleton
from vemrestore.normalize import PercentileNormalization

SMALL_TRAIN = {"num_steps": 3, "batch_size": 2, "patch_size": 16, "validate_every": 1}


def _prior_method(factor: float) -> Skeleton:
    """A skeleton with the shipped prior's weights, no fine-tuning, data range 0..1."""
    return shipped_skeleton(factor, PercentileNormalization(0.0, 1.0))


@pytest.mark.parametrize("method", sorted(priors.PRIOR_FILES))
def test_the_shipped_prior_matches_its_record(method):
    record, state = read_prior("shipped", method)
    weights = priors.prior_weights_path("shipped", method)
    assert record["sha256"] == sha256_file(weights)
    for key in ("data", "steps", "train_seconds", "machine", "commit", "retrain", "command"):
        assert record[key], key
    data = json.dumps(record["data"])
    assert "sample2" not in data  # the axial benchmarks score medulla sample2
    if method == "slices-diffusion":  # the slices benchmark fine-tunes and scores on train_raw
        assert "train_raw" not in data
    assert record["config"] == priors.PRIOR_OPTIONS[method]
    assert record["retrain"] == priors.RETRAIN_COMMANDS[method]
    size = sum(p.stat().st_size for p in weights.parent.glob("*.pt"))
    assert size <= 20 * 2**20  # all shipped weights together
    assert all(v.dtype == torch.float16 for v in state.values())


def test_the_prior_gives_different_outputs_for_different_factors():
    planes = np.random.default_rng(0).random((2, 32, 32)).astype(np.float32)
    x4 = _prior_method(4.0).predict_planes(planes, range(2))
    x8 = _prior_method(8.0).predict_planes(planes, range(2))
    assert np.abs(x4 - x8).mean() > 1e-3


@pytest.mark.realdata
def test_the_prior_alone_beats_cubic_on_unseen_real_sections(real_path):
    # medulla_fibsem_small test: the prior's validation crop, not its training data.
    import tifffile

    raw = tifffile.imread(real_path("medulla_small_test")).astype(np.float32)
    sharp = PercentileNormalization.from_data(raw).apply(raw)[:8, :96, :96]
    sections, _ = AxialSectioning(4, axis=-2).apply(sharp)
    cubic = upsample_axial(sections, 4, kind="cubic", axis=-2)
    cubic = np.ascontiguousarray(cubic[:, : sharp.shape[1]])
    restored = _prior_method(4.0).predict_planes(cubic, range(cubic.shape[0]))
    inner = (slice(None), slice(16, -16), slice(16, -16))
    error_cubic = np.abs(cubic - sharp)[inner].mean()
    error_prior = np.abs(restored - sharp)[inner].mean()
    assert error_prior < 0.97 * error_cubic


def test_a_fine_tune_starts_from_the_prior_and_records_it():
    volume = Volume(np.random.default_rng(2).random((12, 48, 48)).astype(np.float32))
    config = SkeletonConfig(scale_factor=4.0, **SKELETON_PRIOR, prior="shipped", train=SMALL_TRAIN)
    method = Skeleton(config).fit(volume, progress=False)
    record = method.training_record()
    assert record["prior"]["sha256"] == read_prior("shipped", "skeleton")[0]["sha256"]
    # Step 0 is the prior, not cubic interpolation: its loss differs from a zero network's.
    scratch = Skeleton(config.model_copy(update={"prior": None})).fit(volume, progress=False)
    assert method.train_result.val_losses[0][1] != scratch.train_result.val_losses[0][1]


def test_a_factor_outside_the_prior_range_warns():
    volume = Volume(np.random.default_rng(6).random((4, 96, 96)).astype(np.float32))
    config = SkeletonConfig(scale_factor=16.0, **SKELETON_PRIOR, prior="shipped", train=SMALL_TRAIN)
    with pytest.warns(UserWarning, match="outside the range 2-12"):
        Skeleton(config).fit(volume, progress=False)


def test_a_config_file_with_prior_null_trains_from_scratch(tmp_path):
    path = tmp_path / "scratch.yaml"
    path.write_text("method: skeleton\nprior: null\n")
    config = api.configure("skeleton", factor=4, config=path).config
    assert config.prior is None and config.space_to_depth == 1 and config.train.patience is None


def test_from_scratch_never_reads_the_prior(monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise AssertionError("the prior was read")

    monkeypatch.setattr(priors, "read_prior", refuse)
    method = api.configure("skeleton", factor=4, from_scratch=True, train=SMALL_TRAIN)
    assert method.config.prior is None
    volume = Volume(np.random.default_rng(3).random((12, 32, 32)).astype(np.float32))
    method.fit(volume, progress=False)
    assert method.training_record().get("prior") is None


def test_fine_tuning_reads_only_the_input_and_the_prior(tmp_path, monkeypatch):
    data_like = (".tif", ".tiff", ".h5", ".hdf5", ".zarr", ".mrc", ".pt", ".json", ".npy")
    prior = priors.prior_weights_path("shipped", "skeleton")
    thick = tmp_path / "thick.tif"
    write_volume(
        np.random.default_rng(4).random((12, 40, 40)).astype(np.float32),
        thick,
        voxel_size=(40, 10, 10),
    )
    allowed = {str(prior), str(prior.with_suffix(".json"))}
    opened: list[str] = []
    active = [True]

    def audit(event: str, args: tuple) -> None:
        if active[0] and event == "open" and isinstance(args[0], str):
            opened.append(args[0])

    sys.addaudithook(audit)
    monkeypatch.setenv("VEMRESTORE_DATA", str(tmp_path / "no-data-here"))
    try:
        api.train("skeleton", str(thick), tmp_path / "model", factor=4, train=SMALL_TRAIN)
    finally:
        active[0] = False
    # Outside this test's folder (the input and the model written), only the prior is opened.
    read = {p for p in opened if p.endswith(data_like) and not p.startswith(str(tmp_path))}
    assert read <= allowed, read - allowed
    assert str(prior) in read and str(thick) in opened


@pytest.mark.parametrize("damage", ["missing", "corrupt", "no-record", "other-method"])
def test_a_bad_prior_file_is_one_clear_error(tmp_path, monkeypatch, damage):
    shipped = priors.prior_weights_path("shipped", "skeleton")
    weights = tmp_path / shipped.name
    shutil.copy(shipped, weights)
    shutil.copy(shipped.with_suffix(".json"), weights.with_suffix(".json"))
    if damage == "missing":
        weights.unlink()
    elif damage == "corrupt":
        raw = bytearray(weights.read_bytes())
        raw[len(raw) // 2] ^= 0xFF
        weights.write_bytes(bytes(raw))
    elif damage == "no-record":
        weights.with_suffix(".json").unlink()
    else:
        record = json.loads(weights.with_suffix(".json").read_text())
        weights.with_suffix(".json").write_text(json.dumps({**record, "method": "skelem"}))
    monkeypatch.setattr(priors, "shipped_path", lambda name: tmp_path / name)
    with pytest.raises(UserInputError) as error:
        read_prior("shipped", "skeleton")
    message = str(error.value)
    assert "\n" not in message and "skeleton_prior" in message
    assert "--from-scratch" in message


def test_a_prior_of_another_architecture_is_refused_naming_the_options():
    method = Skeleton(SkeletonConfig(scale_factor=4.0, **{**SKELETON_PRIOR, "depth": 1}))
    with pytest.raises(UserInputError, match="depth=2"):
        apply_prior(method.build_networks()["unet"], "shipped", "skeleton")


def test_configure_refuses_options_the_prior_was_not_trained_with():
    with pytest.raises(UserInputError, match=r"base_channels=8 \(prior: 24\).*--from-scratch"):
        api.configure("skeleton", factor=4, base_channels=8)
    config = api.configure("skeleton", factor=4, train={"num_steps": 7}).config
    assert config.prior == "shipped" and config.train.num_steps == 7
    assert config.train.patience == priors.FINE_TUNE["patience"]  # merged, not replaced
    with pytest.raises(UserInputError, match="no shipped prior"):
        api.configure("cubic", factor=4, from_scratch=True)


def test_skelem_trains_its_skeleton_from_the_prior_unless_told_otherwise(tmp_path):
    skeleton = api.configure("skelem", factor=4, steps=100).config.skeleton
    assert skeleton.prior == "shipped" and skeleton.space_to_depth == 2
    assert skeleton.train.num_steps == 50
    assert skeleton.train.patience == priors.FINE_TUNE["patience"]
    scratch = api.configure("skelem", factor=4, from_scratch=True).config.skeleton
    assert scratch.prior is None and scratch.space_to_depth == 1  # recorded in its config
    given = api.configure("skeleton", factor=4).config  # a SkeletonConfig object
    from_object = api.configure("skelem", factor=4, from_scratch=True, skeleton=given).config
    assert from_object.skeleton.prior is None
    # A trained skeleton is used as it is; --from-scratch then concerns the refiner only.
    refiner_only = api.configure("skelem", factor=4, from_scratch=True, skeleton_path=tmp_path)
    assert refiner_only.config.prior is None and refiner_only.config.skeleton is None
    given = api.configure("skelem", factor=4, skeleton_path=tmp_path).config
    assert given.skeleton is None and given.skeleton_path == tmp_path
    for options, named in (
        ({"profile": "gaussian"}, "skeleton.profile='gaussian'"),
        ({"skeleton": {"base_channels": 8}}, "skeleton.base_channels=8"),
    ):
        with pytest.raises(UserInputError, match=rf"{named} \(prior: .*--from-scratch"):
            api.configure("skelem", factor=4, **options)
    scratch = api.configure("skelem", factor=4, skeleton={"prior": None, "base_channels": 8})
    assert scratch.config.skeleton.base_channels == 8 and scratch.config.skeleton.prior is None


def test_mixed_factor_sampler_draws_one_factor_per_batch_from_every_stack():
    rng = np.random.default_rng(0)
    stacks = [rng.random((4, 96, 96), dtype=np.float32), rng.random((3, 120, 100), np.float32)]
    sampler = MixedFactorSampler(stacks, [1.0, 3.0], factor_range=(2.0, 12.0), patch_size=48)
    codes = []
    for _ in range(6):
        inputs, targets = sampler.draw(rng, 8)
        assert inputs.shape == (8, 2, 48, 48) and targets.shape == (8, 1, 48, 48)
        code = np.unique(inputs[:, 1])
        assert code.size == 1 and factor_code(2.0) <= code[0] <= factor_code(12.0)
        codes.append(float(code[0]))
    assert len(set(codes)) > 1
    with pytest.raises(UserInputError, match="patch_size"):
        MixedFactorSampler([rng.random((2, 60, 60), dtype=np.float32)], [1.0], patch_size=48)


def test_a_prior_given_by_path_is_read_with_its_record(tmp_path):
    shipped = priors.prior_weights_path("shipped", "skeleton")
    own = tmp_path / "my_prior.pt"
    shutil.copy(shipped, own)
    shutil.copy(shipped.with_suffix(".json"), own.with_suffix(".json"))
    config = SkeletonConfig(scale_factor=4.0, **SKELETON_PRIOR, prior=str(own), train=SMALL_TRAIN)
    volume = Volume(np.random.default_rng(5).random((12, 32, 32)).astype(np.float32))
    method = Skeleton(config).fit(volume, progress=False)
    assert method.training_record()["prior"]["sha256"] == sha256_file(own)
