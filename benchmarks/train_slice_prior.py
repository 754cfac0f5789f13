"""Train the shipped slice-restorer prior: flow-conditioned diffusion, fine-tuned per stack.

The prior is ``slices-diffusion``'s default network with ``estimate="flow"``
(``vemrestore.methods.priors.SLICES_PRIOR``), trained self-supervised as on a
user's stack (``WindowSampler``: sections and regions hidden from the
sections around them) on several stacks of about 50 nm sections:

- ISBI 2012 ``test_raw`` (30 ssTEM sections, 4 nm pixels), but for the
  validation sections below;
- medulla sample1 (10 nm isotropic FIB-SEM) resliced every 5th section, from
  each of the 5 offsets: 50 nm sections. Never sample2.

Never ISBI 2012 ``train_raw``: the slices benchmark fine-tunes on its
sections 0-14, as a user would on their own stack, and scores 15-29, so the
prior has seen neither (its early stopping holds out unseen sections too).

Validation: ``test_raw`` sections 5, 15 and 25, hidden (fixed batches), never
trained on. Writes ``slices_prior.pt`` (half-precision state dict) and
``slices_prior.json`` (record: data, steps, wall time, machine, commit,
SHA-256) to ``--out``; a killed run resumes from ``--work``. Retrain the
shipped prior::

    python benchmarks/train_slice_prior.py --out src/vemrestore/weights --overwrite
"""

from __future__ import annotations

import time

import numpy as np

from vemrestore.bench._prior_training import (
    load_normalized,
    prior_train_config,
    prior_training_args,
    write_prior,
)
from vemrestore.methods._trained import VALIDATION_BATCHES, ArraySampler
from vemrestore.methods.priors import SLICES_PRIOR
from vemrestore.methods.slices import DiffusionSlices, DiffusionSlicesConfig
from vemrestore.methods.slices.pairs import PackedDenoiser, WindowSampler, joint_and_heads_loss
from vemrestore.train import fixed_validation, holdout_sections

# Reslicing the 10 nm medulla cube every 5th section gives 50 nm sections, as ISBI's.
MEDULLA_STRIDE = 5


def _load(name: str) -> np.ndarray:
    """A real stack scaled to about [-1, 1] as ``DiffusionSlices.fit`` scales the user's."""
    return 2.0 * load_normalized(name) - 1.0


class MixedWindows(ArraySampler):
    """Each batch from one of several ``WindowSampler``, drawn by share."""

    def __init__(self, samplers: list[WindowSampler], shares: list[float]) -> None:
        self.samplers = samplers
        self.shares = np.asarray(shares, float) / np.sum(shares)

    def draw(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        index = int(rng.choice(len(self.samplers), p=self.shares))
        return self.samplers[index].draw(rng, batch_size)


def samplers(config: DiffusionSlicesConfig, scheduler) -> tuple[MixedWindows, WindowSampler, dict]:
    """The training mixture, the validation sampler and the record's description of the data."""
    isbi_test = _load("isbi_test")
    sample1 = _load("medulla_sample1")
    is_val = np.zeros(len(isbi_test), bool)
    is_val[holdout_sections(len(isbi_test))[1]] = True
    stacks = {
        "isbi2012 test_raw (but the validation sections)": (isbi_test, ~is_val, 0.5),
    }
    for offset in range(MEDULLA_STRIDE):
        stacks[f"medulla sample1 sections {offset}::{MEDULLA_STRIDE}"] = (
            np.ascontiguousarray(sample1[offset::MEDULLA_STRIDE]),
            None,
            0.5 / MEDULLA_STRIDE,
        )
    options = {
        "num_context": config.num_context,
        "max_gap": config.max_gap,
        "patch_size": config.train.patch_size,
        "region_probability": config.region_probability,
        "scheduler": scheduler,
        "estimate": config.estimate,
        "progress": True,
    }
    train = []
    for stack, targets, _ in stacks.values():
        usable = np.ones(len(stack), bool)
        train.append(
            WindowSampler(
                stack, usable=usable, targets=usable if targets is None else targets, **options
            )
        )
    validation = WindowSampler(
        isbi_test, usable=np.ones(len(isbi_test), bool), targets=is_val, **options
    )
    data = {
        name: f"share {share:.3g}, shape {list(stack.shape)}"
        for name, (stack, _, share) in stacks.items()
    }
    return MixedWindows(train, [share for *_, share in stacks.values()]), validation, data


def main() -> None:
    args, weights = prior_training_args(
        __doc__.splitlines()[0], "slices-diffusion", steps=3000, batch_size=16
    )
    train = prior_train_config(
        args,
        patch_size=64,
        learning_rate=5e-4,
        lr_schedule="one-cycle",
        grad_clip=1.0,
        loss="l2",
        validate_every=250,
        checkpoint_every=250,
    )
    config = DiffusionSlicesConfig(**SLICES_PRIOR, train=train)
    method = DiffusionSlices(config)
    start = time.perf_counter()
    mixture, validation, data = samplers(config, method.scheduler)
    rng = np.random.default_rng([train.seed, 1])
    batches = [
        validation.sample_batch(rng, train.batch_size) for _ in range(4 * VALIDATION_BATCHES)
    ]
    net = method.seeded_networks()["net"]
    result = method.train_network(
        PackedDenoiser(net, residual=True),  # prediction_type "sample": a correction to the flow
        mixture,
        joint_and_heads_loss,
        fixed_validation(batches, joint_and_heads_loss),
        checkpoint_dir=args.work,
        resume=True,
        description="slices prior",
    )
    net.cpu().eval()
    write_prior(  # wall_seconds includes the flow estimates
        weights,
        net,
        method="slices-diffusion",
        result=result,
        train=train,
        started=start,
        config=SLICES_PRIOR,
        data=data,
        validation="isbi2012 test_raw sections 5, 15, 25 hidden",
    )


if __name__ == "__main__":
    main()
