"""Tests of the shared training loop: learning, checkpoints, exact resume, config."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from torch.optim.optimizer import register_optimizer_step_pre_hook

from vemrestore.degrade import AxialSectioning
from vemrestore.errors import UserInputError
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.models import UNet2D
from vemrestore.train import CHECKPOINT_NAME, TrainConfig, fit_model, pixel_loss


def _config(**options) -> TrainConfig:
    base = {
        "num_steps": 30,
        "batch_size": 4,
        "checkpoint_every": 10,
        "validate_every": 10,
        "device": "cpu",
        "num_threads": 1,
    }
    return TrainConfig(**{**base, **options})


def _model() -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(1, 1, base_channels=4, depth=1)


class _Sampler:
    """Random images -> shifted copy; draws from both the numpy and the torch stream."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.calls = 0
        self.crash_after = crash_after

    def __call__(self, rng: np.random.Generator, batch_size: int):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise RuntimeError("simulated crash")
        x = torch.from_numpy(rng.standard_normal((batch_size, 1, 8, 8), dtype=np.float32))
        x = x + 0.1 * torch.randn(x.shape)
        return x, torch.roll(x, 1, dims=-1)


def _mean_weight(model) -> float:
    return float(sum(p.detach().sum() for p in model.parameters()))


@pytest.mark.realdata
def test_loss_decreases_on_a_real_crop(medulla_crop):
    # Rows of real XY slices sectioned by 4 and cubic-upsampled: learn the residual.
    sharp = medulla_crop[::4, :32, :32] / 255.0
    sections, _ = AxialSectioning(4, axis=-2).apply(sharp)
    cubic = upsample_axial(sections, 4, kind="cubic", axis=-2)
    inputs = torch.from_numpy(cubic[:, None])
    targets = torch.from_numpy((sharp - cubic)[:, None])

    def sample(rng, batch_size):
        idx = torch.from_numpy(rng.choice(len(inputs), batch_size, replace=False))
        return inputs[idx], targets[idx]

    result = fit_model(
        _model(),
        sample_batch=sample,
        loss_fn=pixel_loss("l2"),
        config=_config(learning_rate=3e-3, batch_size=8),
        progress=False,
    )
    assert result.steps == 30 and len(result.history) == 30
    assert np.mean(result.history[-10:]) < np.mean(result.history[:10])


def test_resume_after_a_crash_matches_an_uninterrupted_run(tmp_path):
    config = _config()
    whole = _model()
    reference = fit_model(
        whole,
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l1"),
        config=config,
        validate=_mean_weight,
        progress=False,
    )

    crashed = _model()
    with pytest.raises(RuntimeError, match="simulated crash"):
        fit_model(
            crashed,
            sample_batch=_Sampler(crash_after=20),
            loss_fn=pixel_loss("l1"),
            config=config,
            checkpoint_dir=tmp_path,
            validate=_mean_weight,
            progress=False,
        )
    assert torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"] == 20

    resumed_model = _model()
    sampler = _Sampler()
    resumed = fit_model(
        resumed_model,
        sample_batch=sampler,
        loss_fn=pixel_loss("l1"),
        config=config,
        checkpoint_dir=tmp_path,
        resume=True,
        validate=_mean_weight,
        progress=False,
    )
    assert sampler.calls == 10
    assert resumed.steps == 30
    assert resumed.history == reference.history
    assert [s for s, _ in resumed.val_losses] == [0, 10, 20, 30]
    assert resumed.val_losses == reference.val_losses
    for name, value in whole.state_dict().items():
        assert torch.equal(value, resumed_model.state_dict()[name]), name
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_with_more_steps_extends_a_constant_schedule_exactly(tmp_path):
    config = _config(lr_schedule="constant")
    whole = _model()
    fit_model(
        whole, sample_batch=_Sampler(), loss_fn=pixel_loss("l2"), config=config, progress=False
    )
    extended = _model()
    fit_model(
        extended,
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l2"),
        config=_config(lr_schedule="constant", num_steps=20),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    result = fit_model(
        extended,
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l2"),
        config=config,
        checkpoint_dir=tmp_path,
        resume=True,
        progress=False,
    )
    assert result.steps == 30
    for name, value in whole.state_dict().items():
        assert torch.equal(value, extended.state_dict()[name]), name


def test_validation_runs_in_eval_mode_without_gradients():
    seen = []

    def validate(model):
        seen.append((model.training, torch.is_grad_enabled()))
        return 1.0

    result = fit_model(
        _model(),
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l2"),
        config=_config(num_steps=12, validate_every=5),
        validate=validate,
        progress=False,
    )
    assert seen == [(False, False)] * 4
    assert [s for s, _ in result.val_losses] == [0, 5, 10, 12]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_checkpoint_is_a_user_error(tmp_path, damage):
    path = tmp_path / CHECKPOINT_NAME
    if damage == "garbage":
        path.write_bytes(b"not a checkpoint")
    else:
        fit_model(
            _model(),
            sample_batch=_Sampler(),
            loss_fn=pixel_loss("l1"),
            config=_config(num_steps=10),
            checkpoint_dir=tmp_path,
            progress=False,
        )
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(UserInputError, match=r"corrupt or incomplete.*delete it to start over"):
        fit_model(
            _model(),
            sample_batch=_Sampler(),
            loss_fn=pixel_loss("l1"),
            config=_config(),
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_checkpoint_past_num_steps_is_refused(tmp_path):
    fit_model(
        _model(),
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l1"),
        config=_config(num_steps=10),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.raises(UserInputError, match="num_steps=5"):
        fit_model(
            _model(),
            sample_batch=_Sampler(),
            loss_fn=pixel_loss("l1"),
            config=_config(num_steps=5),
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )


def test_resume_with_changed_options_warns(tmp_path):
    fit_model(
        _model(),
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l1"),
        config=_config(num_steps=10),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    with pytest.warns(UserWarning, match="learning_rate"):
        fit_model(
            _model(),
            sample_batch=_Sampler(),
            loss_fn=pixel_loss("l1"),
            config=_config(num_steps=12, learning_rate=0.01),
            checkpoint_dir=tmp_path,
            resume=True,
            progress=False,
        )


@pytest.mark.parametrize(
    ("schedule", "final_lr"), [("cosine", 0.0), ("one-cycle", 0.0), ("constant", 2e-3)]
)
def test_schedule_reaches_its_final_learning_rate(tmp_path, schedule, final_lr):
    fit_model(
        _model(),
        sample_batch=_Sampler(),
        loss_fn=pixel_loss("l1"),
        config=_config(num_steps=10, lr_schedule=schedule, learning_rate=2e-3),
        checkpoint_dir=tmp_path,
        progress=False,
    )
    saved = torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)
    assert saved["step"] == 10
    assert saved["optimizer"]["param_groups"][0]["lr"] == pytest.approx(final_lr, abs=1e-12)


def test_train_config_rejects_unknown_and_out_of_range_fields():
    with pytest.raises(ValidationError, match="num_step"):
        TrainConfig(num_step=5)
    with pytest.raises(ValidationError, match="batch_size"):
        TrainConfig(batch_size=0)
    config = TrainConfig()
    with pytest.raises(ValidationError, match="learning_rate"):
        config.learning_rate = -1.0
    with pytest.raises(ValidationError, match="loss"):
        TrainConfig(loss="huber")


def test_unknown_loss_and_missing_cuda_are_user_errors():
    with pytest.raises(UserInputError, match="huber"):
        pixel_loss("huber")
    if not torch.cuda.is_available():
        with pytest.raises(UserInputError, match="cuda"):
            fit_model(
                _model(),
                sample_batch=_Sampler(),
                loss_fn=pixel_loss("l1"),
                config=_config(device="cuda"),
                progress=False,
            )


class _ScriptedValidation:
    """Validation losses from a script, one per call; records the weights it saw."""

    def __init__(self, losses: list[float]) -> None:
        self.losses = list(losses)
        self.seen: list[float] = []

    def __call__(self, model) -> float:
        self.seen.append(_mean_weight(model))
        return self.losses.pop(0)


def _fit(model, validate, *, crash_after=None, checkpoint_dir=None, **options):
    """``fit_model`` of the shift task with ``_config(**options)``; resumes from a folder."""
    return fit_model(
        model,
        sample_batch=_Sampler(crash_after),
        loss_fn=pixel_loss("l1"),
        config=_config(**options),
        validate=validate,
        checkpoint_dir=checkpoint_dir,
        resume=checkpoint_dir is not None,
        progress=False,
    )


def test_patience_stops_early_and_keeps_the_best_weights():
    # Validations at steps 0, 5, 10, 15, 20: best at step 5, then 3 worse ones -> stop at 20.
    validate = _ScriptedValidation([1.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.99])
    model = _model()
    result = _fit(model, validate, num_steps=60, validate_every=5, patience=3)
    assert result.steps == 20
    assert [step for step, _ in result.val_losses] == [0, 5, 10, 15, 20]
    assert result.best_step == 5
    assert _mean_weight(model) == pytest.approx(validate.seen[1], rel=1e-6)
    assert _mean_weight(model) != pytest.approx(validate.seen[-1], rel=1e-6)


def test_patience_keeps_the_starting_weights_when_training_never_helps():
    model = _model()
    start = _mean_weight(model)
    validate = _ScriptedValidation([0.1, 0.2, 0.3, 0.4])
    result = _fit(model, validate, num_steps=60, validate_every=10, patience=2)
    assert result.best_step == 0 and result.steps == 20
    assert _mean_weight(model) == pytest.approx(start, rel=1e-6)


def test_an_early_stopped_run_resumes_as_stopped(tmp_path):
    options = {"num_steps": 60, "validate_every": 5, "checkpoint_every": 5, "patience": 2}
    first = _ScriptedValidation([1.0, 0.5, 0.6])
    with pytest.raises(RuntimeError, match="simulated crash"):
        # The checkpoint at step 10 holds the best weights, those of step 5.
        _fit(_model(), first, crash_after=12, checkpoint_dir=tmp_path, **options)
    model = _model()
    resumed = _fit(model, _ScriptedValidation([0.7]), checkpoint_dir=tmp_path, **options)
    assert resumed.steps == 15 and resumed.best_step == 5  # step 15: a second worse one -> stop
    assert _mean_weight(model) == pytest.approx(first.seen[1], rel=1e-6)
    model = _model()
    again = _fit(model, _ScriptedValidation([]), checkpoint_dir=tmp_path, **options)
    assert again.steps == 15 and again.best_step == 5  # already stopped: no step, no validation
    assert _mean_weight(model) == pytest.approx(first.seen[1], rel=1e-6)


def test_patience_without_validation_is_refused():
    with pytest.raises(UserInputError, match="needs a validation"):
        _fit(_model(), None, patience=2)


@pytest.mark.parametrize("clip", [None, 1e-3])
def test_grad_clip_bounds_the_gradient_norm_of_every_step(clip):
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]]
        norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))

    handle = register_optimizer_step_pre_hook(record)
    try:
        fit_model(
            _model(),
            sample_batch=_Sampler(),
            loss_fn=pixel_loss("l2"),
            config=_config(num_steps=5, grad_clip=clip),
            progress=False,
        )
    finally:
        handle.remove()
    assert len(norms) == 5
    if clip is None:
        assert max(norms) > 1e-2  # unclipped, this model's gradients are far larger
    else:
        assert max(norms) <= clip * (1 + 1e-4)
