"""Tests of the self-supervised isotropic reconstruction method ("skeleton")."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.ndimage import gaussian_filter

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods import BlockRequest, create_method, load_method
from vemrestore.methods._persist import load_config, save_config
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.methods.skeleton import Skeleton, SkeletonConfig

FACTOR = 4
TINY = {"base_channels": 4, "depth": 2, "halo_sections": 4}
TINY_TRAIN = {"num_steps": 5, "patch_size": 16, "batch_size": 4, "device": "cpu", "num_threads": 1}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Two torch threads on a busy 2-core machine ran these predictions 30x slower.
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
def trained(sections) -> Skeleton:
    method = create_method("skeleton", scale_factor=FACTOR, **TINY, train=TINY_TRAIN)
    return method.fit(Volume(sections), progress=False)


def _perturbed(method: Skeleton, std: float = 0.15) -> Skeleton:
    """A copy whose weights are random and large, so the residual is far from zero."""
    copy = pickle.loads(pickle.dumps(method))
    torch.manual_seed(1)
    for p in copy.model.parameters():
        torch.nn.init.normal_(p, std=std)
    return copy


def _predict(method, sections, region=None) -> np.ndarray:
    if region is None:
        region = tuple(slice(0, s) for s in method.output_shape(sections.shape))
    where = method.input_region(region, sections.shape)
    start = tuple(s.start for s in where)
    return method.predict_block(sections[where], BlockRequest(start, region))["restored"]


def test_create_method_with_nested_train_options():
    method = create_method("skeleton", scale_factor=4, train={"num_steps": 5})
    assert isinstance(method, Skeleton)
    assert method.config.train.num_steps == 5
    assert method.config.train.patch_size == 64
    assert method.output_shape((10, 20, 30)) == (40, 20, 30)
    assert method.output_voxel_size((40.0, 10.0, 10.0)) == (10.0, 10.0, 10.0)


@pytest.mark.parametrize(
    ("options", "field"),
    [
        ({"widht": 3}, "widht"),
        ({"train": {"num_step": 5}}, "num_step"),
        ({"fusion": "median"}, "fusion"),
        ({"depth": 3, "train": {"patch_size": 20}}, "patch_size"),
    ],
)
def test_config_errors_name_the_field(options, field):
    with pytest.raises(ValidationError, match=field):
        SkeletonConfig(scale_factor=4, **options)


def test_yaml_round_trip(tmp_path):
    config = SkeletonConfig(
        scale_factor=8, context_planes=1, fusion="geometric", train={"num_steps": 10, "loss": "l2"}
    )
    save_config(config, tmp_path / "skeleton.yaml")
    assert load_config(tmp_path / "skeleton.yaml") == config
    (tmp_path / "typo.yaml").write_text("method: skeleton\nscale_factor: 4\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ValidationError, match="lr"):
        load_config(tmp_path / "typo.yaml")
    (tmp_path / "unknown.yaml").write_text("method: skelly\nscale_factor: 4\n")
    with pytest.raises(UserInputError, match="skelly"):
        load_config(tmp_path / "unknown.yaml")


@pytest.mark.realdata
def test_short_training_on_real_data_beats_cubic(medulla_crop):
    sections, _ = AxialSectioning(FACTOR).apply(medulla_crop)
    method = create_method(
        "skeleton",
        scale_factor=FACTOR,
        base_channels=8,
        depth=2,
        train={
            **TINY_TRAIN,
            "num_steps": 40,
            "patch_size": 32,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "lr_schedule": "constant",
            "validate_every": 40,
        },
    ).fit(Volume(sections), progress=False)
    (_, cubic_loss), (_, final_loss) = method.train_result.val_losses
    assert final_loss < cubic_loss
    restored = _predict(method, sections)
    cubic = upsample_axial(sections, FACTOR)
    assert np.mean((restored - medulla_crop) ** 2) < np.mean((cubic - medulla_crop) ** 2)


def test_zero_residual_gives_exactly_cubic(trained, sections):
    copy = pickle.loads(pickle.dumps(trained))
    torch.nn.init.zeros_(copy.model.head.weight)
    torch.nn.init.zeros_(copy.model.head.bias)
    restored = _predict(copy, sections)
    assert restored.dtype == np.float32 and restored.shape == (64, 64, 64)
    np.testing.assert_allclose(restored, upsample_axial(sections, FACTOR), atol=1e-4)


def test_swapping_y_and_x_swaps_the_result(trained, sections):
    method = _perturbed(trained)
    restored = _predict(method, sections)
    swapped = _predict(method, np.ascontiguousarray(sections.transpose(0, 2, 1)))
    assert np.abs(restored - upsample_axial(sections, FACTOR)).max() > 0.1
    np.testing.assert_allclose(swapped, restored.transpose(0, 2, 1), atol=1e-4)


@pytest.mark.parametrize(("axis", "cut"), [(0, 30), (1, 29), (2, 35)])
def test_adjacent_blocks_agree_with_the_whole(trained, sections, axis, cut):
    # inference.halo=16 covers most of this depth-2 U-Net's receptive field: the blocks
    # agree with the whole array to 1 % of the (deliberately large) residual.
    method = _perturbed(trained)
    method.config.inference.halo = 16
    whole = _predict(method, sections)
    first = [slice(0, s) for s in whole.shape]
    second = list(first)
    first[axis], second[axis] = slice(0, cut), slice(cut, whole.shape[axis])
    if axis > 0:  # along z the second block starts its fine range at 8, not 0
        assert method.input_region(tuple(second), sections.shape)[axis].start > 0
    parts = np.concatenate(
        [_predict(method, sections, tuple(first)), _predict(method, sections, tuple(second))],
        axis=axis,
    )
    residual = np.abs(whole - upsample_axial(sections, FACTOR)).max()
    assert residual > 0.1
    assert np.abs(parts - whole).max() < 0.01 * residual


def test_block_with_extra_unaligned_halo_matches(trained, sections):
    method = _perturbed(trained)
    region = (slice(20, 44), slice(20, 40), slice(24, 48))
    expected = _predict(method, sections, region)
    block = sections[1:15, 3:61, 5:60]
    got = method.predict_block(block, BlockRequest((1, 3, 5), region))["restored"]
    assert np.abs(got - expected).max() < 1e-3 * np.abs(expected).max()


def test_save_load_and_pickle_round_trips(trained, sections, tmp_path):
    trained.save(tmp_path / "model")
    names = {p.name for p in (tmp_path / "model").iterdir()}
    assert {"config.json", "weights.pt", "normalization.json", "training.json"} <= names
    loaded = load_method(tmp_path / "model")
    assert isinstance(loaded, Skeleton) and loaded.config == trained.config
    expected = _predict(trained, sections)
    np.testing.assert_array_equal(_predict(loaded, sections), expected)
    np.testing.assert_array_equal(_predict(pickle.loads(pickle.dumps(trained)), sections), expected)


def test_geometric_fusion_is_close_to_the_mean(trained, sections):
    copy = pickle.loads(pickle.dumps(trained))
    copy.config.fusion = "geometric"
    geometric = _predict(copy, sections)
    mean = _predict(trained, sections)
    assert geometric.min() >= 0
    assert np.all(geometric <= mean + 1e-3)  # AM >= GM
    np.testing.assert_allclose(geometric, mean, atol=0.05 * np.ptp(mean))


def test_context_planes_train_and_predict(sections):
    method = create_method(
        "skeleton",
        scale_factor=FACTOR,
        context_planes=1,
        **TINY,
        train={**TINY_TRAIN, "num_steps": 2},
    )
    method.fit(Volume(sections), progress=False)
    assert method.model.config["in_channels"] == 3
    region = (slice(8, 24), slice(0, 32), slice(16, 48))
    assert _predict(method, sections, region).shape == (16, 32, 32)


def test_user_errors(sections, tmp_path):
    method = create_method("skeleton", scale_factor=FACTOR, **TINY, train=TINY_TRAIN)
    with pytest.raises(UserInputError, match="not trained"):
        _predict(method, sections)
    with pytest.raises(UserInputError, match="not trained"):
        method.save(tmp_path / "untrained")
    method.config.train.patch_size = 64
    with pytest.raises(UserInputError, match="patch_size"):
        method.fit(Volume(sections), progress=False)
    with pytest.raises(UserInputError, match="at least 2 sections"):
        method.fit(Volume(sections[:1]), progress=False)
    with pytest.raises(UserInputError, match=r"config\.json"):
        load_method(tmp_path / "nothing")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "config.json").write_text(method.config.model_dump_json())
    with pytest.raises(UserInputError, match=r"weights\.pt"):
        load_method(tmp_path / "partial")


def test_saved_model_edited_or_damaged_is_a_user_error(trained, tmp_path):
    import json

    trained.save(tmp_path / "model")
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    (tmp_path / "model" / "config.json").write_text(json.dumps({**config, "base_channels": 8}))
    with pytest.raises(UserInputError, match="does not fit this config's network"):
        load_method(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text(json.dumps(config))
    (tmp_path / "model" / "normalization.json").write_text("{not json")
    with pytest.raises(UserInputError, match=r"normalization\.json is damaged"):
        load_method(tmp_path / "model")


def test_load_method_restores_an_interpolation_method(sections, tmp_path):
    cubic = create_method("cubic", scale_factor=FACTOR)
    cubic.save(tmp_path / "cubic")
    loaded = load_method(tmp_path / "cubic")
    assert loaded.config == cubic.config
    np.testing.assert_array_equal(_predict(loaded, sections), _predict(cubic, sections))


def test_fit_writes_a_checkpoint_that_resume_picks_up(sections, tmp_path):
    options = {"scale_factor": FACTOR, **TINY, "train": {**TINY_TRAIN, "checkpoint_every": 3}}
    first = create_method("skeleton", **options).fit(
        Volume(sections), checkpoint_dir=tmp_path, progress=False
    )
    assert (tmp_path / "checkpoint.pt").is_file()
    again = create_method("skeleton", **options).fit(
        Volume(sections), checkpoint_dir=tmp_path, resume=True, progress=False
    )
    assert again.train_result.history == first.train_result.history
    for name, value in first.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[name]), name


def test_run_fingerprint_follows_the_weights(trained, tmp_path):
    # The engine resumes a blockwise run only when this digest matches.
    trained.save(tmp_path / "model")
    assert load_method(tmp_path / "model").run_fingerprint() == trained.run_fingerprint()
    assert _perturbed(trained).run_fingerprint() != trained.run_fingerprint()
