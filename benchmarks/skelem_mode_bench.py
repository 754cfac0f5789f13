"""SkelEM's two samplers judged by structure on a cube that no benchmark scores (medulla sample1).

Which sampler should SkelEM use by default: 4 samples of 4 steps from the
start matched to the skeleton's error (``truncated``, the default), or 2
samples of 4 steps from pure noise (``full``)? On the scoring cube (sample2)
the second segments better, but choosing there would pick on the test data;
on held-out XY sections (``skelem_refiner_probe.py``) only PSNR can be
measured. This script decides on medulla sample1 instead: its central
``--crop`` x ``--crop`` columns, all 250 planes, sectioned by ``--factor``
(box profile); SkelEM is configured and trained as ``vemrestore iso --method
skelem`` does on those sections, then predicts the cube with each sampler.
Rows: cubic, the skeleton SkelEM froze, and the two samplers. Scores: all the
axial bench's measures (``AxialScorer``); sample1 has no labels, so
segmentation VI and ARAND compare the shipped segmenter's segmentation of
each restoration with its segmentation of the truth image.

Caveat: sample1 is part of the training data of the skeleton and refiner
priors. Both samplers run the same networks, so the comparison between them
is fair; their absolute scores here are not results.

Reproduce (about 30 minutes on one core of the 2-core machine)::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python benchmarks/skelem_mode_bench.py --factor 8 \\
        --out benchmarks/results/skelem_mode_sample1_x8.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from vemrestore import api
from vemrestore.bench import provenance, real_dataset
from vemrestore.bench._axial import TRUTH_ROW, AxialResult, format_table, save_results
from vemrestore.bench._scores import section_cube
from vemrestore.engine import predict_array
from vemrestore.io import open_volume
from vemrestore.metrics import load_segmenter

DATASET = "medulla_fibsem_10nm/sample1_raw"
SAMPLERS = {
    "skelem, 4 samples from the matched start (default)": {"num_samples": 4},
    "skelem, 2 samples of 4 steps from noise": {
        "num_samples": 2,
        "mode": "full",
        "num_inference_steps": 4,
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factor", type=int, default=8)
    parser.add_argument("--crop", type=int, default=160, help="lateral side of the cube")
    parser.add_argument("--steps", type=int, default=None, help="SkelEM's budget (smoke runs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    origin = provenance(sys.argv if argv is None else ["benchmarks/skelem_mode_bench.py", *argv])
    path = real_dataset("medulla_sample1")
    if path is None:
        print("skipped: real data medulla sample1 not found (set VEMRESTORE_DATA)", file=sys.stderr)
        return 0
    volume = open_volume(path).to_numpy().astype(np.float32)
    y0, x0 = ((n - args.crop) // 2 for n in volume.shape[1:])
    truth = volume[:, y0 : y0 + args.crop, x0 : x0 + args.crop]
    cube = section_cube(
        truth,
        args.factor,
        labels=None,
        segmenter=load_segmenter(),
        voxel_size_nm=10.0,
        source=DATASET,
    )
    factor = args.factor
    results = [AxialResult(DATASET, TRUTH_ROW, factor, 0, 0, 0, cube.scorer.score(cube.fine)[0])]

    def score(row: str, method, fit_seconds: float = 0.0) -> None:
        start = time.perf_counter()
        restored = predict_array(method, cube.sections)
        seconds = time.perf_counter() - start
        mvox = restored.size / 1e6 / max(seconds, 1e-9)
        scores = {**cube.scorer.score(restored)[0], "predict_seconds": seconds}
        results.append(
            AxialResult(DATASET, row, factor, fit_seconds + seconds, fit_seconds, mvox, scores)
        )
        print(format_table(results[-1:]), flush=True)

    score("cubic", api.configure("cubic", factor=factor))
    method = api.configure("skelem", factor=factor, steps=args.steps)
    start = time.perf_counter()
    method.fit(cube.observed, progress=False)
    fit_seconds = time.perf_counter() - start
    score("skeleton (SkelEM's, frozen)", method.skeleton)
    for row, options in SAMPLERS.items():
        score(row, method.with_inference(**options), fit_seconds)
    save_results(results, args.out, origin, overwrite=True)
    print(format_table(results))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
