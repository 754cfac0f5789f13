"""Train the shipped SkelEM refiner prior: one denoiser of the skeleton's residual for every factor.

The prior is SkelEM's refiner (``vemrestore.methods.priors.SKELEM_PRIOR``,
the default noise schedule) trained on what the shipped skeleton prior, not
fine-tuned, leaves of XY-like planes degraded at 12 factors log-spaced from 2
to 12 (``vemrestore.methods.skelem.prior.mixed_factor_pool``), drawn from the
skeleton prior's own training stacks (never medulla sample2, which the axial
benchmarks score). The truncated range of training timesteps is the one
SkelEM matches to a skeleton error of one residual unit (strength 0.5 at 4
steps); half the timesteps are drawn there, half over the whole schedule, as
SkelEM trains.

Validation: ``medulla_fibsem_small/test_raw`` at factors 3, 5.5, 8 and 12
(fixed noise and timesteps). Writes ``skelem_refiner_prior.pt`` (half-precision
state dict) and ``skelem_refiner_prior.json`` (record) to ``--out``; a killed
run resumes from ``--work``. Retrain the shipped prior::

    python benchmarks/train_refiner_prior.py --out src/vemrestore/weights --overwrite
"""

from __future__ import annotations

import time

import numpy as np
import torch.nn.functional as F

from vemrestore.bench._prior_training import (
    load_normalized,
    prior_train_config,
    prior_training_args,
    training_stacks,
    write_prior,
)
from vemrestore.diffusion import make_scheduler
from vemrestore.methods.priors import SKELEM_PRIOR
from vemrestore.methods.skelem import SkelEM, SkelEMConfig
from vemrestore.methods.skelem.config import SkelEMInference
from vemrestore.methods.skelem.prior import mixed_factor_pool, prior_factors
from vemrestore.methods.skelem.refiner import (
    PackedDenoiser,
    RefinerPairs,
    matched_strength,
    truncated_start,
)
from vemrestore.train import fixed_validation

FACTORS = prior_factors(2.0, 12.0, 12)
VALIDATION_FACTORS = (3.0, 5.5, 8.0, 12.0)
PATCH = 32
PATCHES_PER_FACTOR = 2048  # split across the stacks by their shares
VALIDATION_PATCHES = 64  # per validation factor


def main() -> None:
    started = time.perf_counter()
    args, weights = prior_training_args(
        __doc__.splitlines()[0], "skelem", steps=30_000, batch_size=8
    )
    train = prior_train_config(
        args,
        patch_size=PATCH,
        learning_rate=1e-3,
        loss="l2",
        validate_every=1000,
        checkpoint_every=500,
    )
    method = SkelEM(SkelEMConfig(scale_factor=8.0, **SKELEM_PRIOR, train=train))
    diffusion = method.config.diffusion
    start_step = truncated_start(
        diffusion, SkelEMInference(strength=matched_strength(diffusion, 4, 1.0))
    )
    pairs = {
        "scheduler": make_scheduler(diffusion),
        "truncated_start": start_step,
        "truncated_fraction": method.config.truncated_fraction,
    }
    stacks, shares, data = training_stacks()
    counts = np.rint(PATCHES_PER_FACTOR * np.asarray(shares) / np.sum(shares)).astype(int)
    sampler = RefinerPairs(
        *mixed_factor_pool(stacks, FACTORS, counts=counts, patch_size=PATCH, seed=0), **pairs
    )
    test = load_normalized("medulla_small_test")
    val = mixed_factor_pool(
        [test], VALIDATION_FACTORS, counts=[VALIDATION_PATCHES], patch_size=PATCH, seed=1
    )
    val_batches = RefinerPairs(*val, **pairs).sample_batch(
        np.random.default_rng([0, 1]), len(val[0])
    )
    refiner = method.seeded_networks()["xz"]
    result = method.train_network(
        PackedDenoiser(refiner),  # type: ignore[arg-type]
        sampler,
        F.mse_loss,
        fixed_validation([val_batches], F.mse_loss),
        checkpoint_dir=args.work,
        resume=True,
        description="skelem refiner prior",
    )
    refiner.cpu().eval()
    write_prior(
        weights,
        refiner,
        method="skelem",
        result=result,
        train=train,
        started=started,
        config=SKELEM_PRIOR,
        diffusion=diffusion.model_dump(),
        factors=FACTORS,
        truncated_start=start_step,
        data={**data, "pool": f"{PATCHES_PER_FACTOR} patches of {PATCH}^2 per factor"},
        validation=f"medulla_fibsem_small test_raw at factors {list(VALIDATION_FACTORS)}",
    )


if __name__ == "__main__":
    main()
