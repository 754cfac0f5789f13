"""What the scripts that train a shipped prior share: their options and how they write it."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from torch import nn

from vemrestore._shipped import write_shipped
from vemrestore.bench._provenance import provenance
from vemrestore.methods.priors import PRIOR_FILES, RETRAIN_COMMANDS
from vemrestore.train import TrainConfig, TrainResult

__all__ = ["prior_training_args", "write_prior"]


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
