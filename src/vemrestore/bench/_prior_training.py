"""What the scripts that train a shipped prior share: their options, the axial priors' data,
and how they write a prior."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
from torch import nn

from vemrestore._shipped import write_shipped
from vemrestore.bench._provenance import provenance
from vemrestore.bench.datasets import real_dataset
from vemrestore.methods.priors import PRIOR_FILES, RETRAIN_COMMANDS
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig, TrainResult

__all__ = [
    "load_normalized",
    "prior_train_config",
    "prior_training_args",
    "training_stacks",
    "write_prior",
]

# The ISBI 2012 train_raw sections the axial priors may see: the slices benchmark scores 15-29.
ISBI_TRAIN_SECTIONS = slice(0, 15)


def prior_training_args(
    description: str, method: str, *, steps: int, batch_size: int
) -> tuple[argparse.Namespace, Path]:
    """The parsed options of a prior's training script, and the weights file to write.

    Exits with a message when the weights exist and ``--overwrite`` was not given.
    """
    name = PRIOR_FILES[method]
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", type=Path, required=True, help=f"folder for {name} and its .json")
    parser.add_argument("--work", type=Path, default=Path(".vemrestore-train") / Path(name).stem)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--overwrite", action="store_true", help="replace existing weights")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    weights = args.out / name
    if weights.exists() and not args.overwrite:
        sys.exit(f"{weights} exists; pass --overwrite to replace it")
    return args, weights


def prior_train_config(args: argparse.Namespace, **options: Any) -> TrainConfig:
    """A prior's training options: the script's steps, batch size, threads and device
    (``prior_training_args``), seed 0, and ``options``."""
    return TrainConfig(
        num_steps=args.steps,
        batch_size=args.batch_size,
        num_threads=args.threads,
        device=args.device,
        seed=0,
        **options,
    )


def load_normalized(name: str, sections: slice = slice(None)) -> np.ndarray:
    """Data set ``name`` (``real_dataset``), its ``sections``, normalised as a user's input is.

    Exits with a message when the data set is not found.
    """
    path = real_dataset(name)
    if path is None:
        sys.exit(f"dataset {name} not found (set VEMRESTORE_DATA to the shared data folder)")
    raw = tifffile.imread(path)[sections]
    return PercentileNormalization.from_data(raw).apply(raw).astype(np.float32)


def training_stacks() -> tuple[list[np.ndarray], list[float], dict[str, str]]:
    """The axial priors' normalised training stacks, their sample shares, and a description
    for the record (never medulla sample2, which the axial benchmarks score)."""
    sample1 = load_normalized("medulla_sample1")
    stacks = {
        "medulla sample1 XY": (sample1, 0.2),
        "medulla sample1 XZ": (np.ascontiguousarray(sample1.transpose(1, 0, 2)), 0.15),
        "medulla sample1 YZ": (np.ascontiguousarray(sample1.transpose(2, 0, 1)), 0.15),
        "medulla_fibsem_small train_raw": (load_normalized("medulla_small_train"), 0.1),
        "isbi2012 test_raw": (load_normalized("isbi_test"), 0.1),
        "isbi2012 train_raw sections 0-14": (
            load_normalized("isbi_train", ISBI_TRAIN_SECTIONS),
            0.1,
        ),
        "epfl hippocampus slices": (load_normalized("epfl_slices"), 0.2),
    }
    data = {
        name: f"share {share}, shape {list(stack.shape)}" for name, (stack, share) in stacks.items()
    }
    arrays, shares = zip(*stacks.values(), strict=True)
    return list(arrays), list(shares), data


def write_prior(
    weights: Path,
    network: nn.Module,
    *,
    method: str,
    result: TrainResult,
    train: TrainConfig,
    started: float,
    **fields: Any,
) -> None:
    """Write ``network``'s weights in half precision with their record beside them.

    The record holds ``fields`` (config, data, validation, ...), the training
    (steps, seconds, validation losses, options), the retrain command and the
    provenance; ``started`` is the ``time.perf_counter()`` of this run's start.
    Prints a summary.
    """
    record = {
        "method": method,
        "network": getattr(network, "config", None),
        **fields,
        "steps": result.steps,
        "train_seconds": round(result.seconds, 1),  # summed over resumed runs
        "wall_seconds": round(time.perf_counter() - started, 1),  # of this (last) run
        "val_losses": result.val_losses,
        "train_config": train.model_dump(),
        "retrain": RETRAIN_COMMANDS[method],
        **provenance(),
    }
    state = {key: value.half() for key, value in network.state_dict().items()}
    written = write_shipped(weights, state, record)
    print(json.dumps({k: written[k] for k in ("steps", "train_seconds", "sha256")}, indent=2))
