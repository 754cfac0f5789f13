"""Choose between slice priors by held-out loss, not by the benchmark's scored sections.

Each prior (a ``slices_prior.pt`` with its record) is loaded, untrained
further, into ``slices-diffusion`` with the fine-tune's options and scored by
the validation loss of ``DiffusionSlices.fit`` on ISBI 2012 ``train_raw``
sections 0-14, where section 5 is hidden: the section the slices benchmark's
fine-tune holds out; it scores sections 15-29. Three batch sizes give three
fixed validation sets. ``slices_prior_val.json`` compares the batch-4 prior
with the shipped batch-16 one::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/slices_prior_val.py \\
        /tmp/s15/prior2/slices_prior.pt shipped --out benchmarks/results/slices_prior_val.json

where the first was trained by ``train_slice_prior.py --batch-size 4``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import tifffile

from vemrestore.bench import provenance, real_dataset
from vemrestore.io import atomic_output
from vemrestore.io._volume import Volume
from vemrestore.methods.priors import SLICES_FINE_TUNE, SLICES_PRIOR
from vemrestore.methods.slices import DiffusionSlices, DiffusionSlicesConfig

BATCH_SIZES = (4, 8, 16)


def held_out_loss(prior: str, stack, batch_size: int) -> float:
    """The validation loss of ``prior`` before any fine-tuning step."""
    train = SLICES_FINE_TUNE | {
        "device": "cpu",
        "num_steps": 1,
        "batch_size": batch_size,
        "validate_every": 1,
    }
    method = DiffusionSlices(DiffusionSlicesConfig(**SLICES_PRIOR, prior=prior, train=train))
    method.fit(Volume(stack), progress=False)
    return method.train_result.val_losses[0][1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("priors", nargs="+", help="prior .pt files (or 'shipped')")
    parser.add_argument("--out", type=Path, required=True, help="JSON output path")
    args = parser.parse_args()
    origin = provenance()
    path = real_dataset("isbi_train")
    if path is None:
        raise SystemExit("ISBI 2012 train_raw not found (set VEMRESTORE_DATA)")
    stack = tifffile.imread(path)[:15]
    losses = {
        prior: {str(b): round(held_out_loss(prior, stack, b), 5) for b in BATCH_SIZES}
        for prior in args.priors
    }
    print(json.dumps(losses, indent=1))
    with atomic_output(args.out, overwrite=True) as partial:
        partial.write_text(json.dumps({"held_out_loss": losses, **origin}, indent=2))


if __name__ == "__main__":
    main()
