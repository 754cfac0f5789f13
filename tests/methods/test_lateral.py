"""The lateral method: config, pair checks, registration, training, blockwise prediction."""

from __future__ import annotations

import json

import numpy as np
import pydantic
import pytest
import torch
import zarr
from scipy import ndimage
from skimage.metrics import peak_signal_noise_ratio

from vemrestore.api._lateral import train_lateral
from vemrestore.degrade import LateralDegradation, PoissonGaussianNoise
from vemrestore.engine import predict_array, predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io._volume import Volume
from vemrestore.methods import create_method, get_method
from vemrestore.methods._persist import load_method
from vemrestore.methods.lateral import (
    LateralConfig,
    LateralMethod,
    check_pair_shapes,
    register_pair,
    upsample_bicubic,
)

TINY = {
    "channels": 8,
    "num_heads": 2,
    "num_transformer_blocks": 2,
    "num_residual_blocks": 1,
    "progress": False,
}


def _train(steps: int = 2, **options):
    return {"train": {"num_steps": steps, "patch_size": 16, "batch_size": 2, **options}}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _smooth_image(shape, seed=0, sigma=3.0) -> np.ndarray:
    noise = np.random.default_rng(seed).standard_normal(shape)
    smooth = ndimage.gaussian_filter(noise, sigma, axes=(-2, -1))
    return (100 + 40 * smooth / smooth.std()).astype(np.float32)


# -- config -------------------------------------------------------------------


def test_registered_and_factor_one_to_four():
    assert get_method("lateral") is LateralMethod
    for f in (1, 2, 3, 4):
        assert create_method("lateral", scale_factor=f).config.scale_factor == f
    for bad in (0, 5, 2.5):
        with pytest.raises(pydantic.ValidationError, match="scale_factor"):
            LateralConfig(scale_factor=bad)


def test_config_round_trip_and_cross_field_checks():
    config = LateralConfig(scale_factor=3, objective="noisier-noisy", train={"num_steps": 7})
    again = LateralConfig.model_validate_json(config.model_dump_json())
    assert again == config and again.train.num_steps == 7 and again.train.patch_size == 48
    with pytest.raises(pydantic.ValidationError, match="noise_gain and noise_sigma"):
        LateralConfig(noise_gain=2.0)
    with pytest.raises(pydantic.ValidationError, match="divisible"):
        LateralConfig(channels=30, num_heads=4)


def test_old_config_with_planes_per_batch_loads():
    old = {
        "method": "lateral",
        "scale_factor": 2,
        "planes_per_batch": 6,
        "train": {"device": "cpu", "amp": False},
    }
    config = LateralConfig.model_validate(old)
    assert config.inference.batch_size == 6
    assert config.inference.device == "cpu" and config.inference.amp is False
    assert config.inference.halo is None  # the network's own reach
    assert LateralConfig().inference.batch_size == 4
    with pytest.raises(pydantic.ValidationError, match="planes_per_batch"):
        LateralConfig.model_validate({**old, "inference": {"batch_size": 2}})


def test_halo_defaults_to_the_network_reach():
    method = create_method("lateral", scale_factor=2, channels=8, num_heads=2)
    assert method.halo == method.network_context > 0
    assert create_method("lateral", inference={"halo": 3}).halo == 3


# -- pairs --------------------------------------------------------------------


def test_mismatched_pair_sizes_give_a_clear_error():
    with pytest.raises(UserInputError) as err:
        check_pair_shapes((2, 30, 40), (2, 64, 80), 2)
    message = str(err.value)
    assert "(2, 30, 40)" in message and "(2, 64, 80)" in message and "scale_factor=2" in message
    with pytest.raises(UserInputError, match="same number of slices"):
        check_pair_shapes((2, 30, 40), (3, 60, 80), 2)
    # HR may exceed f * LR by less than one LR pixel (the factor's rounding).
    assert check_pair_shapes((2, 30, 40), (2, 92, 120), 3) == (2, 90, 120)
    assert check_pair_shapes((2, 30, 40), (2, 61, 81), 2) == (2, 60, 80)


def test_training_on_mismatched_pairs_raises_before_training():
    hr = _smooth_image((2, 64, 64))
    with pytest.raises(UserInputError, match="do not match"):
        train_lateral(hr, lr=hr[:, :30, :32], scale_factor=2, **TINY, **_train())


def test_real_pairs_need_lr():
    method = create_method("lateral", scale_factor=2, pairs="real", **_train())
    with pytest.raises(UserInputError, match="needs the LR"):
        method.fit(_smooth_image((2, 64, 64)), progress=False)


def test_registration_recovers_a_known_shift():
    truth = _smooth_image((2, 96, 96))
    lr, _ = LateralDegradation(2).apply(truth)
    moved = np.stack([ndimage.shift(t, (3.0, -2.0), order=3, mode="reflect") for t in truth])
    result = register_pair(lr, moved, 2)
    np.testing.assert_allclose(result.shifts, [[-1.5, 1.0]] * 2, atol=0.1)
    assert result.margin == 3
    assert result.lr.shape == (2, 42, 42) and result.hr.shape == (2, 84, 84)
    inner = truth[:, 6:-6, 6:-6]
    assert np.abs(result.hr - inner).mean() < 0.05 * np.abs(moved[:, 6:-6, 6:-6] - inner).mean()


def test_aligned_pairs_are_not_resampled():
    hr = _smooth_image((1, 64, 64))
    lr, _ = LateralDegradation(2).apply(hr)
    result = register_pair(lr, hr, 2)
    assert result.margin == 0 and np.array_equal(result.hr, hr)


def test_bicubic_is_aligned_with_binning():
    truth = _smooth_image((128, 128), sigma=4.0)
    lr, _ = LateralDegradation(2).apply(truth)
    aligned = upsample_bicubic(lr, 2)
    shifted = ndimage.shift(aligned, 0.5, order=3, mode="nearest")  # half an HR pixel off
    inner = (slice(8, -8), slice(8, -8))
    good = peak_signal_noise_ratio(truth[inner], aligned[inner], data_range=255)
    bad = peak_signal_noise_ratio(truth[inner], shifted[inner], data_range=255)
    assert aligned.shape == (128, 128) and aligned.dtype == np.float32
    assert good > bad + 3.0


# -- training and prediction ---------------------------------------------------


@pytest.mark.realdata
def test_training_on_a_tiny_real_crop_lowers_the_loss(medulla_crop):
    hr = medulla_crop[:8]
    noise = PoissonGaussianNoise(gain=1.0, sigma=8.0)
    lr, _ = LateralDegradation(2).apply(hr)
    lr, _ = noise.apply(lr, rng=1)
    method = train_lateral(
        hr,
        lr=lr,
        scale_factor=2,
        **TINY,
        train={
            "num_steps": 40,
            "patch_size": 16,
            "batch_size": 4,
            "learning_rate": 2e-3,
            "validate_every": 40,
        },
    )
    (_, before), (_, after) = method.train_result.val_losses
    assert after < 0.9 * before
    assert np.mean(method.train_result.history[-10:]) < np.mean(method.train_result.history[:10])


@pytest.mark.parametrize("scale_factor", [1, 3])
def test_blockwise_prediction_equals_whole_and_survives_save_load(tmp_path, scale_factor):
    hr, _ = PoissonGaussianNoise(gain=1.0, sigma=3.0).apply(_smooth_image((2, 120, 120)), rng=0)
    method = train_lateral(
        hr,
        scale_factor=scale_factor,
        noise_gain=1.0,
        noise_sigma=2.0,
        **TINY,
        **_train(),
    )
    with torch.no_grad():  # weights far from the identity start: every layer matters
        for p in method.model.parameters():
            p.normal_(0.0, 0.2, generator=torch.Generator().manual_seed(p.numel()))
    method.save(tmp_path / "model")
    assert (tmp_path / "model" / "weights.pt").is_file()
    assert json.loads((tmp_path / "model" / "config.json").read_text())["method"] == "lateral"
    loaded = load_method(tmp_path / "model")
    lr = LateralDegradation(scale_factor).apply(hr)[0][:, :40, :37]
    whole = predict_array(method, lr)
    assert whole.shape == (2, 40 * scale_factor, 37 * scale_factor)
    np.testing.assert_array_equal(predict_array(loaded, lr), whole)
    volume = Volume(lr, voxel_size=(30.0, 8.0, 8.0))
    out = predict_volume(
        loaded, volume, tmp_path / "out.zarr", block_shape=(1, 24, 32), progress=False
    )
    blocks = zarr.open_group(str(out), mode="r")["0"][:]
    np.testing.assert_allclose(blocks, whole, rtol=1e-4, atol=1e-2)  # float rounding only
    assert loaded.output_voxel_size(volume.voxel_size) == (
        30.0,
        8.0 / scale_factor,
        8.0 / scale_factor,
    )


def test_synthetic_pairs_use_the_given_noise_minus_what_binning_carries():
    hr, _ = PoissonGaussianNoise(gain=1.0, sigma=3.0).apply(_smooth_image((2, 64, 64)), rng=0)
    method = train_lateral(hr, scale_factor=2, noise_gain=2.0, noise_sigma=4.0, **TINY, **_train())
    record = method.training_record()
    assert record["lr_noise"] == {"gain": 2.0, "sigma": 4.0}
    hr_noise = record["hr_noise"]
    assert record["added_noise"]["gain"] == pytest.approx(2.0 - hr_noise["gain"] / 4)
    assert record["added_noise"]["sigma"] ** 2 == pytest.approx(16.0 - hr_noise["sigma"] ** 2 / 4)


def test_noisier_noisy_and_denoised_reference_train():
    hr = _smooth_image((2, 64, 64))
    noisy, _ = PoissonGaussianNoise(gain=1.0, sigma=5.0).apply(hr, rng=0)
    lr, _ = LateralDegradation(2).apply(hr)
    lr, _ = PoissonGaussianNoise(gain=1.0, sigma=5.0).apply(lr, rng=1)
    method = train_lateral(
        noisy,
        lr=lr,
        scale_factor=2,
        objective="noisier-noisy",
        reference="denoised",
        **TINY,
        **_train(3),
    )
    assert len(method.train_result.history) == 3
    assert np.isfinite(method.train_result.history).all()
    assert method.training_record()["lr_noise"]["sigma"] > 0
    assert method.predict_block(lr, _request((2, 64, 64)))["restored"].shape == (2, 64, 64)


def test_train_lateral_saves_a_folder_an_old_style_config_still_loads(tmp_path):
    hr = _smooth_image((2, 64, 64))
    folder = tmp_path / "model"
    method = train_lateral(hr, scale_factor=2, out_dir=folder, **TINY, **_train())
    names = {p.name for p in folder.iterdir()}
    assert {"config.json", "weights.pt", "normalization.json", "training.json"} <= names
    assert (folder / "checkpoints").is_dir()
    norms = json.loads((folder / "normalization.json").read_text())
    assert set(norms) == {"input", "output"}
    assert isinstance(torch.load(folder / "weights.pt", weights_only=True), dict)
    lr = LateralDegradation(2).apply(hr)[0]
    whole = predict_array(method, lr)
    # A model saved before the training/inference split: planes_per_batch at the top.
    config = json.loads((folder / "config.json").read_text())
    del config["inference"]
    config["planes_per_batch"] = 2  # both slices in one call, as with the default 4
    (folder / "config.json").write_text(json.dumps(config))
    loaded = load_method(folder)
    assert loaded.config.inference.batch_size == 2
    np.testing.assert_array_equal(predict_array(loaded, lr), whole)


def test_untrained_method_refuses_to_predict():
    method = create_method("lateral", scale_factor=2)
    with pytest.raises(UserInputError, match="not trained"):
        method.predict_block(np.zeros((1, 8, 8), np.float32), _request((1, 16, 16)))


def _request(shape):
    from vemrestore.methods import BlockRequest

    return BlockRequest((0, 0, 0), tuple(slice(0, n) for n in shape))
