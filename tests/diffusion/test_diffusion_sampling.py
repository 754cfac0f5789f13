"""Tests of the diffusion package: scheduler consistency, samplers, targets, config I/O."""

from __future__ import annotations

import json

import pytest
import torch
from pydantic import ValidationError

from vemrestore.diffusion import (
    SCHEDULER_CONFIG_NAME,
    DiffusionConfig,
    diffusion_loss,
    diffusion_target,
    load_scheduler_config,
    make_scheduler,
    predicted_original_sample,
    sample,
    sampling_timesteps,
    save_scheduler_config,
)
from vemrestore.errors import UserInputError

PREDICTIONS = ("epsilon", "sample", "v_prediction")
SHAPE = (2, 1, 3, 8, 8)


@pytest.fixture(scope="module")
def schedulers():
    """One DDIM scheduler per prediction type (linear betas: alpha_bar(T-1) is not tiny)."""
    return {
        kind: make_scheduler(DiffusionConfig(beta_schedule="linear", prediction_type=kind))
        for kind in PREDICTIONS
    }


def _x0() -> torch.Tensor:
    return torch.rand(SHAPE, generator=torch.Generator().manual_seed(3)) * 2 - 1


def _oracle(scheduler, x0: torch.Tensor):
    """A denoiser that knows x0: returns the exact target for any (x_t, t)."""

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a = scheduler.alphas_cumprod[t].reshape(-1, *([1] * (x_t.ndim - 1)))
        noise = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
        return diffusion_target(scheduler, x0, noise, t)

    return denoise


class _Counting:
    def __init__(self, fn) -> None:
        self.fn, self.calls, self.timesteps = fn, 0, []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.timesteps.append(int(t[0]))
        return self.fn(x, t)


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("num_steps", [1, 4])
def test_step_and_add_noise_are_consistent(schedulers, kind, num_steps):
    scheduler = schedulers[kind]
    x0 = _x0()
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(4))
    timesteps = sampling_timesteps(scheduler, num_steps)
    for t in timesteps:
        level = t.repeat(SHAPE[0])
        x_t = scheduler.add_noise(x0, noise, level)
        out = scheduler.step(diffusion_target(scheduler, x0, noise, level), int(t), x_t)
        torch.testing.assert_close(out.pred_original_sample, x0, atol=2e-4, rtol=0)
    # The last step goes to t = 0: the true noise as prediction recovers x0 in one step.
    t = timesteps[-1]
    x_t = scheduler.add_noise(x0, noise, t.repeat(SHAPE[0]))
    target = diffusion_target(scheduler, x0, noise, t.repeat(SHAPE[0]))
    torch.testing.assert_close(
        scheduler.step(target, int(t), x_t).prev_sample, x0, atol=2e-4, rtol=0
    )


@pytest.mark.parametrize("kind", PREDICTIONS)
def test_predicted_original_sample_inverts_the_target(schedulers, kind):
    scheduler = schedulers[kind]
    x0 = _x0()
    noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5))
    t = torch.tensor([20, 700])
    x_t = scheduler.add_noise(x0, noise, t)
    target = diffusion_target(scheduler, x0, noise, t)
    torch.testing.assert_close(predicted_original_sample(scheduler, target, x_t, t), x0)
    loss = diffusion_loss(target, scheduler=scheduler, sample=x0, noise=noise, timesteps=t)
    assert float(loss) == 0.0
    wrong = diffusion_loss(target + 1, scheduler=scheduler, sample=x0, noise=noise, timesteps=t)
    assert float(wrong) == pytest.approx(1.0)


def test_velocity_target_comes_from_get_velocity(schedulers):
    scheduler = schedulers["v_prediction"]
    x0, noise, t = _x0(), torch.randn(SHAPE), torch.tensor([1, 999])
    expected = scheduler.get_velocity(x0, noise, t)
    torch.testing.assert_close(diffusion_target(scheduler, x0, noise, t), expected)


def test_weighted_loss_ignores_zero_weight_pixels(schedulers):
    scheduler = schedulers["epsilon"]
    x0, noise, t = _x0(), torch.randn(SHAPE), torch.tensor([5, 50])
    weight = torch.zeros(SHAPE)
    weight[..., :4] = 1
    output = noise.clone()
    output[..., 4:] += 10.0  # errors only where the weight is 0
    loss = diffusion_loss(
        output, scheduler=scheduler, sample=x0, noise=noise, timesteps=t, weight=weight
    )
    assert float(loss) == 0.0


@pytest.mark.parametrize("strength", [1.0, 0.3])
@pytest.mark.parametrize("num_steps", [1, 3, 7])
def test_sample_calls_the_network_num_steps_times(schedulers, strength, num_steps):
    scheduler = schedulers["v_prediction"]
    x0 = _x0()
    denoise = _Counting(_oracle(scheduler, x0))
    sample(denoise, scheduler=scheduler, num_steps=num_steps, init=x0, strength=strength)
    assert denoise.calls == num_steps
    assert denoise.timesteps == sorted(denoise.timesteps, reverse=True)
    if strength < 1:
        assert denoise.timesteps[0] <= 0.35 * 1000
    else:
        assert denoise.timesteps[0] == 999


@pytest.mark.parametrize("kind", PREDICTIONS)
@pytest.mark.parametrize("strength", [1.0, 0.4])
def test_oracle_denoiser_recovers_the_clean_sample(schedulers, kind, strength):
    scheduler = schedulers[kind]
    x0 = _x0()
    init = x0 if strength < 1 else None
    result = sample(
        _oracle(scheduler, x0),
        scheduler=scheduler,
        num_steps=4,
        shape=SHAPE,
        init=init,
        strength=strength,
        generator=torch.Generator().manual_seed(0),
    )
    torch.testing.assert_close(result, x0, atol=5e-4, rtol=0)


def _random_net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x * 0.7 + t.reshape(-1, 1, 1, 1, 1) / 1000)


def test_same_seed_gives_identical_output(schedulers):
    scheduler = schedulers["v_prediction"]

    def run(seed: int, strength: float) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return sample(
            _random_net,
            scheduler=scheduler,
            num_steps=3,
            init=_x0(),
            strength=strength,
            generator=gen,
        )

    for strength in (1.0, 0.5):
        assert torch.equal(run(7, strength), run(7, strength))
        assert not torch.equal(run(7, strength), run(8, strength))


@pytest.mark.parametrize("strength", [1.0, 0.5])
def test_known_pixels_are_bit_identical(schedulers, strength):
    scheduler = schedulers["epsilon"]
    known = _x0() * 3.7  # values outside [-1, 1] must survive too
    mask = torch.rand(SHAPE, generator=torch.Generator().manual_seed(1)) > 0.4
    result = sample(
        _random_net,
        scheduler=scheduler,
        num_steps=4,
        init=torch.zeros(SHAPE),
        strength=strength,
        generator=torch.Generator().manual_seed(2),
        known=known,
        known_mask=mask,
    )
    assert torch.equal(result[mask], known[mask])
    assert not torch.equal(result[~mask], known[~mask])


def test_noise_fn_replaces_the_generator(schedulers):
    scheduler = schedulers["sample"]
    draws = []

    def noise_fn(k: int, shape: tuple[int, ...]) -> torch.Tensor:
        draws.append(k)
        return torch.full(shape, 0.5)

    known, mask = torch.zeros(SHAPE), torch.zeros(SHAPE, dtype=torch.bool)
    mask[0] = True
    a = sample(
        _random_net,
        scheduler=scheduler,
        num_steps=3,
        shape=SHAPE,
        noise_fn=noise_fn,
        known=known,
        known_mask=mask,
    )
    b = sample(
        _random_net,
        scheduler=scheduler,
        num_steps=3,
        shape=SHAPE,
        noise_fn=noise_fn,
        known=known,
        known_mask=mask,
    )
    assert torch.equal(a, b)
    assert draws == [0, 1, 2, 0, 1, 2]


def test_sample_rejects_bad_inputs(schedulers):
    scheduler = schedulers["epsilon"]
    with pytest.raises(UserInputError, match="init="):
        sample(_random_net, scheduler=scheduler, num_steps=2, shape=SHAPE, strength=0.5)
    with pytest.raises(UserInputError, match=r"shape= .* or init="):
        sample(_random_net, scheduler=scheduler, num_steps=2)
    with pytest.raises(UserInputError, match="boolean"):
        sample(
            _random_net,
            scheduler=scheduler,
            num_steps=2,
            shape=SHAPE,
            known=torch.zeros(SHAPE),
            known_mask=torch.zeros(SHAPE),
        )
    with pytest.raises(UserInputError, match="together"):
        sample(_random_net, scheduler=scheduler, num_steps=2, shape=SHAPE, known=torch.zeros(SHAPE))
    with pytest.raises(UserInputError, match="num_steps"):
        sample(_random_net, scheduler=scheduler, num_steps=0, shape=SHAPE)
    with pytest.raises(UserInputError, match="strength"):
        sample(_random_net, scheduler=scheduler, num_steps=2, init=_x0(), strength=1.5)


def test_step_before_set_timesteps_raises():
    scheduler = make_scheduler(DiffusionConfig())
    with pytest.raises(ValueError, match="set_timesteps"):
        scheduler.step(torch.zeros(1, 1, 2, 2), 10, torch.zeros(1, 1, 2, 2))


def test_scheduler_config_round_trip(tmp_path):
    config = DiffusionConfig(num_train_timesteps=500, prediction_type="sample", clip_sample=True)
    path = save_scheduler_config(config, tmp_path)
    assert path.name == SCHEDULER_CONFIG_NAME
    assert load_scheduler_config(tmp_path) == config
    from diffusers import DDIMScheduler

    assert DDIMScheduler.from_pretrained(tmp_path).config.prediction_type == "sample"


def test_scheduler_config_errors(tmp_path):
    with pytest.raises(UserInputError, match="does not exist"):
        load_scheduler_config(tmp_path)
    data = json.loads(save_scheduler_config(DiffusionConfig(), tmp_path).read_text())
    (tmp_path / SCHEDULER_CONFIG_NAME).write_text(json.dumps({**data, "steps_offset": 1}))
    with pytest.raises(UserInputError, match="steps_offset"):
        load_scheduler_config(tmp_path)
    (tmp_path / SCHEDULER_CONFIG_NAME).write_text(json.dumps({**data, "_class_name": "X"}))
    with pytest.raises(UserInputError, match="DDIMScheduler"):
        load_scheduler_config(tmp_path)


def test_diffusion_config_validates():
    with pytest.raises(ValidationError, match="extra"):
        DiffusionConfig(num_steps=4)
    with pytest.raises(ValidationError, match="zero"):
        DiffusionConfig(prediction_type="epsilon", rescale_betas_zero_snr=True)
    with pytest.raises(ValidationError, match="prediction_type"):
        DiffusionConfig(prediction_type="noise")
