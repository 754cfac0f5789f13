"""The record every prior training script writes beside its weights."""

from __future__ import annotations

import argparse
import time

import torch

from vemrestore.bench._prior_training import prior_train_config, write_prior
from vemrestore.methods import priors
from vemrestore.train import TrainConfig, TrainResult


def test_a_written_prior_reads_back_with_its_full_record(tmp_path, monkeypatch):
    network = torch.nn.Conv2d(1, 2, 3)
    weights = tmp_path / priors.PRIOR_FILES["slices-diffusion"]
    result = TrainResult(val_losses=[(0, 0.5), (10, 0.25)], seconds=12.34, steps=10)
    write_prior(
        weights,
        network,
        method="slices-diffusion",
        result=result,
        train=TrainConfig(num_steps=10),
        started=time.perf_counter(),
        config={"estimate": "flow"},
        data={"a stack": "share 1"},
    )
    monkeypatch.setattr(priors, "shipped_path", lambda name: tmp_path / name)
    record, state = priors.read_prior("shipped", "slices-diffusion")
    assert record["retrain"] == priors.RETRAIN_COMMANDS["slices-diffusion"]
    assert (record["steps"], record["train_seconds"]) == (10, 12.3)
    assert record["train_config"]["num_steps"] == 10 and record["data"] == {"a stack": "share 1"}
    assert record["commit"] and record["machine"]
    assert all(value.dtype == torch.float16 for value in state.values())
    assert torch.equal(state["weight"].float(), network.weight.detach().half().float())


def test_a_prior_takes_the_scripts_budget_and_device_with_its_own_options():
    args = argparse.Namespace(steps=7, batch_size=3, threads=2, device="cpu")
    train = prior_train_config(args, patch_size=32, learning_rate=2e-3)
    assert (train.num_steps, train.batch_size, train.num_threads) == (7, 3, 2)
    assert (train.device, train.seed, train.patch_size, train.learning_rate) == ("cpu", 0, 32, 2e-3)
