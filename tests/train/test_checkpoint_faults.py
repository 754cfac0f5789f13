"""Storage faults while checkpointing: one-line user error, the last good checkpoint kept,
and checkpoints often enough that a short run resumes too."""

from __future__ import annotations

import errno
import os

import numpy as np
import pytest
import torch

from vemrestore.errors import UserInputError
from vemrestore.models import UNet2D
from vemrestore.train import CHECKPOINT_NAME, TrainConfig, fit_model, pixel_loss
from vemrestore.train._loop import checkpoint_interval

FULL = OSError(errno.ENOSPC, "No space left on device")


def _config(**options) -> TrainConfig:
    base = {
        "num_steps": 20,
        "batch_size": 2,
        "checkpoint_every": 5,
        "validate_every": 5,
        "device": "cpu",
        "num_threads": 1,
    }
    return TrainConfig(**{**base, **options})


def _model() -> UNet2D:
    torch.manual_seed(0)
    return UNet2D(1, 1, base_channels=4, depth=1)


class _Sampler:
    """Random 8x8 images -> shifted copies; raises after ``crash_after`` batches."""

    def __init__(self, crash_after: int | None = None) -> None:
        self.calls = 0
        self.crash_after = crash_after

    def __call__(self, rng: np.random.Generator, batch_size: int):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise RuntimeError("simulated kill")
        x = torch.from_numpy(rng.standard_normal((batch_size, 1, 8, 8), dtype=np.float32))
        return x, torch.roll(x, 1, dims=-1)


def _fit(model, tmp_path, sampler=None, **options):
    return fit_model(
        model,
        sample_batch=sampler or _Sampler(),
        loss_fn=pixel_loss("l1"),
        config=options.pop("config", _config()),
        checkpoint_dir=tmp_path,
        progress=False,
        **options,
    )


def _saved_step(tmp_path) -> int:
    return int(torch.load(tmp_path / CHECKPOINT_NAME, weights_only=True)["step"])


def _fail_on_call(monkeypatch, target, name, call: int, error: OSError) -> None:
    """Make ``target.name`` raise ``error`` on its ``call``-th call (1-based)."""
    real = getattr(target, name)
    calls = []

    def fake(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, fake)


def test_disk_full_on_second_checkpoint_keeps_the_first_and_resumes(tmp_path, monkeypatch):
    reference = _model()
    _fit(reference, tmp_path / "reference", config=_config(num_steps=10))

    _fail_on_call(monkeypatch, torch, "save", 2, FULL)
    with pytest.raises(UserInputError) as caught:
        _fit(_model(), tmp_path, config=_config(num_steps=10), resume=True)
    message = str(caught.value)
    assert "\n" not in message
    assert f"writing checkpoint {tmp_path / CHECKPOINT_NAME} failed: No space left" in message
    assert "free space, then run the same command again to resume" in message
    assert _saved_step(tmp_path) == 1  # 5 % of 10 steps: a checkpoint every step
    assert not list(tmp_path.glob("*.tmp"))

    monkeypatch.undo()
    sampler = _Sampler()
    resumed = _model()
    result = _fit(resumed, tmp_path, sampler, config=_config(num_steps=10), resume=True)
    assert result.steps == 10 and sampler.calls == 9
    for name, value in reference.state_dict().items():
        assert torch.equal(value, resumed.state_dict()[name]), name


def test_failed_write_of_the_file_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    # The fault in the file write itself (not in torch): the temporary is removed.
    _fit(_model(), tmp_path, config=_config(num_steps=4))
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):
        file = real_open(path, mode, *args, **kwargs)
        if str(path).endswith(".tmp") and "w" in mode:
            file.write(b"half a checkpoint")
            file.close()
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return file

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(UserInputError, match=r"No space left on device: .*checkpoint\.pt\.tmp"):
        _fit(_model(), tmp_path, config=_config(num_steps=8), resume=True)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_read_only_rename_is_a_user_error_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    _fit(_model(), tmp_path, config=_config(num_steps=4))
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()
    _fail_on_call(monkeypatch, os, "replace", 1, OSError(errno.EROFS, "Read-only file system"))
    with pytest.raises(UserInputError, match=r"Read-only file system \(.*writable"):
        _fit(_model(), tmp_path, config=_config(num_steps=8), resume=True)
    monkeypatch.undo()
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))


def test_without_resume_the_advice_names_resume(tmp_path, monkeypatch):
    _fail_on_call(monkeypatch, torch, "save", 1, FULL)
    with pytest.raises(UserInputError, match=r"free space, then run again with resume=True"):
        _fit(_model(), tmp_path)


def test_checkpoint_folder_that_is_a_file_is_a_user_error(tmp_path):
    blocker = tmp_path / "model"
    blocker.write_text("not a folder")
    with pytest.raises(UserInputError, match=r"creating checkpoint folder .*model.*choose another"):
        _fit(_model(), blocker / "checkpoints")
    assert blocker.read_text() == "not a folder"


def test_a_killed_write_leaves_no_temporary_for_the_next_run(tmp_path):
    _fit(_model(), tmp_path, config=_config(num_steps=2))
    (tmp_path / f"{CHECKPOINT_NAME}.tmp").write_bytes(b"torn by a kill")
    # Already at the last step: this run writes no checkpoint, yet cleans the leftover.
    _fit(_model(), tmp_path, config=_config(num_steps=2), resume=True)
    assert not list(tmp_path.glob("*.tmp"))
    assert _saved_step(tmp_path) == 2


@pytest.mark.parametrize(
    ("num_steps", "every", "expected"),
    [(60, 200, 3), (20, 5, 1), (2000, 200, 100), (100_000, 200, 200), (1, 200, 1)],
)
def test_checkpoint_interval_is_at_most_five_percent(num_steps, every, expected):
    assert checkpoint_interval(_config(num_steps=num_steps, checkpoint_every=every)) == expected


def test_short_run_killed_midway_resumes_near_where_it_stopped(tmp_path):
    config = _config(num_steps=60, checkpoint_every=200, validate_every=200)
    with pytest.raises(RuntimeError, match="simulated kill"):
        _fit(_model(), tmp_path, _Sampler(crash_after=40), config=config)
    assert _saved_step(tmp_path) >= 36
    sampler = _Sampler()
    result = _fit(_model(), tmp_path, sampler, config=config, resume=True)
    assert result.steps == 60 and sampler.calls == 60 - 39
    assert _saved_step(tmp_path) == 60  # the last step is always saved
