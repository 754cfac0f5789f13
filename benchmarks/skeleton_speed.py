"""Training and prediction speed of the skeleton's networks: the old default against the prior's.

Both run in one process, on the same real input, so their ratio holds on any
machine (absolute CPU times vary with the load):

- ``full-res``: ``--from-scratch`` defaults (24 channels, depth 3, every
  level at full resolution; what ``iso --method skeleton`` trained before the
  shipped prior);
- ``prior``: the shipped prior's network (``SKELETON_PRIOR``: space-to-depth 2,
  24 channels, depth 2, a factor channel).

Training: optimiser steps of the real pair sampler (16 patches of 64^2 from
medulla sample1's XY sections, x8) per second, and patches per second.
Prediction: output Mvox/s of ``predict_array`` on a 31 x 128 x 128 crop of
sample1 sectioned x8 (one block, the method's own plane batching).

Reproduce::

    .venv/bin/python benchmarks/skeleton_speed.py --threads 2 \
        --out benchmarks/results/skeleton_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vemrestore import api
from vemrestore.bench import provenance, real_dataset, save_record
from vemrestore.degrade import AxialSectioning
from vemrestore.engine import predict_array
from vemrestore.io import open_volume
from vemrestore.methods.priors import SKELETON_PRIOR
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import TrainConfig, fit_model, pixel_loss

FACTOR = 8.0
NETWORKS = {"full-res": {}, "prior": SKELETON_PRIOR}


def _method(options: dict, steps: int):
    train = {"num_steps": steps, "batch_size": 16, "patch_size": 64, "device": "cpu"}
    return api.configure(
        "skeleton",
        factor=FACTOR,
        from_scratch=True,
        **options,
        train=train,
        inference={"device": "cpu"},
    )


def train_speed(options: dict, sections: np.ndarray, steps: int) -> dict[str, float]:
    """Steps and patches per second of ``steps`` training steps (after 3 warm-up steps)."""
    method = _method(options, steps)
    cfg = method.config
    sampler = method.pair_sampler(sections, np.arange(sections.shape[0]))
    network = method.build_networks()["unet"]
    timings = []
    for num_steps in (3, 3 + steps):
        config = TrainConfig(**{**cfg.train.model_dump(), "num_steps": num_steps})
        start = time.perf_counter()
        fit_model(
            network,
            sample_batch=sampler.sample_batch,
            loss_fn=pixel_loss("l1"),
            config=config,
            progress=False,
        )
        timings.append(time.perf_counter() - start)
    seconds = timings[1] - timings[0]
    return {
        "train_steps_per_s": steps / seconds,
        "train_patches_per_s": steps * cfg.train.batch_size / seconds,
        "parameters": sum(p.numel() for p in network.parameters()),
    }


def predict_speed(options: dict, thick: np.ndarray) -> dict[str, float]:
    """Output Mvox/s of one ``predict_array`` call (untrained weights: same cost)."""
    method = _method(options, 1)
    method.set_trained(
        method.build_networks(), normalization=PercentileNormalization.from_data(thick)
    )
    predict_array(method, thick[:8, :64, :64])  # warm-up
    start = time.perf_counter()
    restored = predict_array(method, thick)
    seconds = time.perf_counter() - start
    return {"predict_mvox_per_s": restored.size / 1e6 / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = real_dataset("medulla_sample1")
    if path is None:
        print("skipped: real data medulla_sample1 not found (set VEMRESTORE_DATA)", file=sys.stderr)
        return 0
    raw = open_volume(path).to_numpy().astype(np.float32)
    sections = PercentileNormalization.from_data(raw).apply(raw)
    thick, _ = AxialSectioning(FACTOR).apply(raw[:248, :128, :128])
    thick = thick.astype(np.float32)
    rows = {
        name: {**train_speed(options, sections, args.steps), **predict_speed(options, thick)}
        for name, options in NETWORKS.items()
    }
    ratios = {
        key: rows["prior"][key] / rows["full-res"][key]
        for key in ("train_patches_per_s", "predict_mvox_per_s")
    }
    record = {
        "results": rows,
        "ratios_prior_over_full_res": ratios,
        "threads": args.threads,
        **provenance(sys.argv if argv is None else ["benchmarks/skeleton_speed.py", *argv]),
    }
    print(json.dumps({"results": rows, "ratios": ratios}, indent=2))
    save_record(record, args.out, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
