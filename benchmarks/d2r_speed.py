"""Prediction throughput of D2R's 3D network (stage III alone) against cubic, blockwise.

Speed does not depend on what the weights learnt, so the network keeps its
seeded initial weights with the zero-initialised head replaced by small
random values (a zero head would let nothing be skipped anyway: every layer
runs). Both methods restore the sectioned medulla sample2 (x8 by default)
through the engine into an OME-Zarr, as ``vemrestore iso``/``predict`` do;
the script reports output Mvox/s of each and their ratio, measured in one run.

Reproduce (on an otherwise idle 2-core machine)::

    .venv/bin/python benchmarks/d2r_speed.py --threads 2 --out benchmarks/results/d2r_speed.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vemrestore.bench import provenance, real_dataset, save_record
from vemrestore.degrade import AxialSectioning
from vemrestore.engine import predict_volume
from vemrestore.io import Volume, open_volume
from vemrestore.methods import create_method
from vemrestore.normalize import PercentileNormalization


def timed_prediction(method, volume: Volume, folder: Path, name: str, block) -> dict:
    start = time.perf_counter()
    out = predict_volume(
        method, volume, folder / f"{name}.zarr", block_shape=block, progress=False, pyramid=False
    )
    seconds = time.perf_counter() - start
    size = int(np.prod(open_volume(str(out)).shape))
    return {"seconds": seconds, "mvox_per_s": size / 1e6 / seconds, "output_voxels": size}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block", type=int, nargs=3, default=[128, 256, 256])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = real_dataset("medulla_sample2")
    if path is None:
        print("skipped: medulla sample2 not found (set VEMRESTORE_DATA)", file=sys.stderr)
        return 0
    truth = open_volume(path).to_numpy().astype(np.float32)
    sections, _ = AxialSectioning(args.factor).apply(truth)
    volume = Volume(sections, voxel_size=(10.0 * args.factor, 10.0, 10.0))
    d2r = create_method("d2r", scale_factor=args.factor)
    networks = d2r.seeded_networks()
    with torch.no_grad():
        torch.manual_seed(0)
        for parameter in networks["net"].head.parameters():
            parameter.normal_(std=1e-3)
    d2r.set_trained(networks, normalization=PercentileNormalization.from_data(sections))
    block = tuple(args.block)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rows = {
            "cubic": timed_prediction(
                create_method("cubic", scale_factor=args.factor), volume, folder, "cubic", block
            ),
            "d2r": timed_prediction(d2r, volume, folder, "d2r", block),
        }
    record = {
        "results": rows,
        "d2r_vs_cubic_time_ratio": rows["d2r"]["seconds"] / rows["cubic"]["seconds"],
        "factor": args.factor,
        "threads": args.threads,
        "block": list(block),
        **provenance(sys.argv if argv is None else ["benchmarks/d2r_speed.py", *argv]),
    }
    print(json.dumps({k: v for k, v in record.items() if k != "machine"}, indent=1))
    save_record(record, args.out, overwrite=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
