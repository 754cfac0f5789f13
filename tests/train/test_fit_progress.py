"""The training progress bar: what is trained, steps done, time spent and time left."""

from __future__ import annotations

import re

import numpy as np
import torch

from vemrestore.models import UNet2D
from vemrestore.train import TrainConfig, fit_model


def _identity_batch(rng: np.random.Generator, batch_size: int):
    x = torch.from_numpy(rng.standard_normal((batch_size, 1, 8, 8), dtype=np.float32))
    return x, x


def _fit(**options) -> None:
    fit_model(
        UNet2D(1, 1, base_channels=4, depth=1),
        sample_batch=_identity_batch,
        loss_fn=torch.nn.functional.mse_loss,
        config=TrainConfig(num_steps=3, batch_size=2, device="cpu", num_threads=1),
        **options,
    )


def test_the_bar_names_the_stage_and_shows_elapsed_and_remaining_time(capsys):
    _fit(description="refiner")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    # "refiner loss 0.98 ━━━━ 3/3 0:00:00 0:00:00": label, steps, elapsed, time left.
    assert re.fullmatch(r"refiner loss \d+\.\d{4} \S+ 3/3 \d+:\d\d:\d\d \d+:\d\d:\d\d", line), line


def test_the_bar_is_labelled_training_by_default_and_hidden_without_progress(capsys):
    _fit()
    assert capsys.readouterr().out.startswith("training loss ")
    _fit(progress=False, description="refiner")
    assert capsys.readouterr().out == ""
