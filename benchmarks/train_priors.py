"""Train the shipped skeleton prior: one network for every axial factor, fine-tuned per volume.

The prior is the skeleton's U-Net (``vemrestore.methods.priors.SKELETON_PRIOR``:
space-to-depth 2, so its levels run at half resolution, and a factor input
channel) trained on XY-like planes degraded along one axis at a factor drawn
log-uniformly from 2 to 12 per batch (``MixedFactorSampler``).

Training data (never medulla sample2, which the axial benchmarks score; never
ISBI train sections 15-29, which the slices benchmark scores):

- medulla sample1 (10 nm isotropic FIB-SEM): its XY, XZ and YZ planes;
- ``medulla_fibsem_small/train_raw``;
- ISBI 2012 ``test_raw`` and ``train_raw`` sections 0-14 (4 nm ssTEM sections);
- the EPFL hippocampus slices (5 nm FIB-SEM).

Validation: ``medulla_fibsem_small/test_raw`` at factors 3, 5.5, 8 and 12
(fixed batches). Writes ``skeleton_prior.pt`` (half-precision state dict) and
``skeleton_prior.json`` (record: data, steps, wall time, machine, commit,
SHA-256) to ``--out``; a killed run resumes from ``--work``. Retrain the
shipped prior::

    python benchmarks/train_priors.py --out src/vemrestore/weights --overwrite
"""

from __future__ import annotations

import time

import numpy as np

from vemrestore.bench._prior_training import (
    load_normalized,
    prior_train_config,
    prior_training_args,
    training_stacks,
    write_prior,
)
from vemrestore.methods.priors import SKELETON_PRIOR
from vemrestore.methods.skeleton import PairSampler, Skeleton, SkeletonConfig
from vemrestore.methods.skeleton_prior import MixedFactorSampler
from vemrestore.train import fixed_validation, pixel_loss, split_batches

VALIDATION_FACTORS = (3.0, 5.5, 8.0, 12.0)
PATCH = 48


def validation_batches(batch_size: int) -> list:
    """Fixed batches of ``medulla_fibsem_small/test_raw`` at each validation factor."""
    test = load_normalized("medulla_small_test")
    rng = np.random.default_rng([0, 1])
    batches = []
    for factor in VALIDATION_FACTORS:
        sampler = PairSampler(
            test,
            np.arange(test.shape[0]),
            scale_factor=factor,
            profile=SKELETON_PRIOR["profile"],
            patch_size=PATCH,
            context_planes=0,
            factor_input=True,
        )
        batches += split_batches(*sampler.draw(rng, 2 * batch_size), batch_size)
    return batches


def main() -> None:
    args, weights = prior_training_args(
        __doc__.splitlines()[0], "skeleton", steps=30_000, batch_size=16
    )
    train = prior_train_config(
        args,
        patch_size=PATCH,
        learning_rate=1e-3,
        validate_every=500,
        checkpoint_every=250,
    )
    method = Skeleton(SkeletonConfig(scale_factor=8.0, **SKELETON_PRIOR, train=train))
    stacks, shares, data = training_stacks()
    sampler = MixedFactorSampler(
        stacks,
        shares,
        factor_range=(2.0, 12.0),
        profile=SKELETON_PRIOR["profile"],
        patch_size=PATCH,
    )
    loss_fn = pixel_loss(train.loss)
    network = method.seeded_networks()["unet"]
    start = time.perf_counter()
    result = method.train_network(
        network,
        sampler,
        loss_fn,
        fixed_validation(validation_batches(train.batch_size), loss_fn),
        checkpoint_dir=args.work,
        resume=True,
        description="skeleton prior",
    )
    network.cpu().eval()
    write_prior(
        weights,
        network,
        method="skeleton",
        result=result,
        train=train,
        started=start,
        config=SKELETON_PRIOR,
        factor_range=[2.0, 12.0],
        data=data,
        validation=f"medulla_fibsem_small test_raw at factors {list(VALIDATION_FACTORS)}",
    )


if __name__ == "__main__":
    main()
