"""SkelEM's maps in one engine pass: wall time of all outputs vs the restoration alone.

Trains a small SkelEM (skeleton, refiner, cycle) on a real medulla FIB-SEM crop
sectioned along z (sample1: never a scored cube), then predicts it blockwise
twice with two samples: the restoration alone, and the restoration with its
data-consistency and standard-deviation maps. Before the multi-output engine
each map was a further engine pass repeating the sampling (about 3x the time).

Example::

    python benchmarks/multi_output_bench.py --json benchmarks/results/multi_output.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from vemrestore.bench import provenance, real_dataset
from vemrestore.degrade import AxialSectioning
from vemrestore.engine import predict_volume
from vemrestore.io import Volume, open_volume

TINY_TRAIN = {"num_steps": 30, "batch_size": 4, "patch_size": 32, "device": "cpu"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--crop", type=int, default=64, help="Side of the crop (fine voxels).")
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="Timed runs of each variant.")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    record = provenance()

    from vemrestore.api import configure

    path = real_dataset("medulla_sample1")
    if path is None:
        raise SystemExit("medulla sample1 not found (set VEMRESTORE_DATA to ../shared/data)")
    n = args.crop
    truth = open_volume(path).to_numpy()[:n, :n, :n].astype(np.float32)
    sections, _ = AxialSectioning(args.factor).apply(truth)
    volume = Volume(sections, voxel_size=(10.0 * args.factor, 10.0, 10.0))
    method = configure(
        "skelem",
        factor=args.factor,
        base_channels=8,
        depth=2,
        pool_size=32,
        train=TINY_TRAIN,
        skeleton={"base_channels": 8, "depth": 2, "train": TINY_TRAIN},
        from_scratch=True,  # a tiny skeleton, not the shipped prior's network
        cycle={"num_crops": 2, "train": {**TINY_TRAIN, "num_steps": 5, "batch_size": 1}},
        inference={"num_samples": args.samples, "device": "cpu"},
    )
    method.fit(volume, progress=False)
    maps = [name for name in method.outputs if name != "restored"]

    def run(with_maps: bool) -> float:
        with tempfile.TemporaryDirectory() as tmp:
            extra = {name: Path(tmp) / f"out_{name}.zarr" for name in maps} if with_maps else {}
            start = time.perf_counter()
            predict_volume(
                method,
                volume,
                Path(tmp) / "out.zarr",
                extra_outputs=extra,
                block_shape=(32, 64, 64),
                num_workers=1,
                progress=False,
            )
            return time.perf_counter() - start

    run(False)  # warm-up
    alone, together = [], []
    for _ in range(args.repeats):  # interleaved, so a busy machine slows both alike
        alone.append(run(False))
        together.append(run(True))
    result = {
        "factor": args.factor,
        "crop": n,
        "num_samples": args.samples,
        "outputs": list(method.outputs),
        "restored_only_seconds": alone,
        "all_outputs_seconds": together,
        "ratio_all_to_restored": min(together) / min(alone),
        **record,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
