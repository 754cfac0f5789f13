"""The skeleton from its shipped prior against training from scratch, on real FIB-SEM (axial SR).

The isotropic medulla cube (sample2, 10 nm voxels, never used to train the
prior) is sectioned along z by each factor (box profile); the methods see only
those sections, the truth is used only to score. Rows:

- ``cubic``: the cubic spline;
- ``prior``: the shipped prior alone, no fine-tuning (the factor is its input);
- ``prior+finetune``: what ``vemrestore iso --method skeleton`` does by default,
  the prior fine-tuned on the sections (``FINE_TUNE``: at most 1000 steps,
  stopped early on held-out sections);
- ``scratch``: the same network and budget from random weights
  (``--from-scratch`` with the prior's architecture and the fine-tune options);
- ``scratch-default`` (only when asked for with ``--rows``): ``--from-scratch``
  with its defaults (the 24-channel, depth-3 full-resolution U-Net, 2000 steps).

Scores: PSNR/SSIM, axial FRC vs truth, data consistency, segmentation VI/ARAND
against the ground-truth bodies (shipped segmenter), feature KID, spectra and
z high-frequency power. Per row: training seconds, steps run (early stopping),
prediction seconds and output Mvox/s (one ``predict_array`` call, the method's
own batching). ``--iso-wall`` also times the real command
``vemrestore iso thick.tif out.zarr --method skeleton`` end to end (input
TIFF to finished OME-Zarr, blockwise engine), the figure of the 10-minute target.

Reproduce (about 10 minutes per factor on one core of a 2-core machine)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/prior_bench.py --factors 8 4 \
        --iso-wall --out benchmarks/results/prior_skeleton.json

Smoke test (a minute)::

    .venv/bin/python benchmarks/prior_bench.py --quick --out /tmp/prior_quick.json
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vemrestore import api
from vemrestore.bench import provenance
from vemrestore.bench._axial import TRUTH_ROW, AxialResult, format_table, save_results
from vemrestore.bench._scores import AxialScorer, section_cube
from vemrestore.bench.datasets import scoring_cube
from vemrestore.engine import predict_array
from vemrestore.io import Volume, open_volume, write_volume
from vemrestore.methods.priors import FINE_TUNE, SKELETON_PRIOR
from vemrestore.methods.skeleton_prior import shipped_skeleton
from vemrestore.metrics import load_segmenter
from vemrestore.normalize import PercentileNormalization

log = logging.getLogger("prior_bench")
DATASET = "medulla_fibsem_10nm/sample2_raw"
ROWS = ("cubic", "prior", "prior+finetune", "scratch", "scratch-default")
DEFAULT_ROWS = ROWS[:4]


def _method(row: str, factor: int, steps: int | None):
    """The configured (untrained) method of a learned row."""
    if row == "prior+finetune":
        return api.configure("skeleton", factor=factor, steps=steps)
    if row == "scratch":
        train = {**FINE_TUNE, **({} if steps is None else {"num_steps": steps})}
        return api.configure(
            "skeleton", factor=factor, from_scratch=True, **SKELETON_PRIOR, train=train
        )
    if row == "scratch-default":
        return api.configure("skeleton", factor=factor, from_scratch=True, steps=steps)
    raise ValueError(row)


def bench_factor(
    truth: np.ndarray,
    labels: np.ndarray | None,
    factor: int,
    rows: tuple[str, ...],
    args: argparse.Namespace,
    segmenter: Any,
) -> list[AxialResult]:
    cube = section_cube(
        truth, factor, labels=labels, segmenter=segmenter, voxel_size_nm=10.0, source=DATASET
    )
    sections, observed, scorer = cube.sections, cube.observed, cube.scorer
    results = [AxialResult(DATASET, TRUTH_ROW, factor, 0, 0, 0, scorer.score(cube.fine)[0])]
    for row in rows:
        extra: dict[str, float] = {}
        fit_seconds = 0.0
        if row == "cubic":
            method = api.configure("cubic", factor=factor)
        elif row == "prior":
            method = shipped_skeleton(factor, PercentileNormalization.from_data(sections))
        else:
            method = _method(row, factor, args.steps)
            start = time.perf_counter()
            method.fit(observed, progress=False)
            fit_seconds = time.perf_counter() - start
            result = method.train_result
            best = result.steps if result.best_step is None else result.best_step
            extra = {"train_steps": result.steps, "best_step": best}
        start = time.perf_counter()
        restored = predict_array(method, sections)
        seconds = time.perf_counter() - start
        mvox = restored.size / 1e6 / max(seconds, 1e-9)
        scores = {**scorer.score(restored)[0], **extra, "predict_seconds": seconds}
        results.append(
            AxialResult(DATASET, row, factor, fit_seconds + seconds, fit_seconds, mvox, scores)
        )
        log.info("x%d %s: %.2f dB, fit %.0f s, %.2f Mvox/s", factor, row, scores["psnr"],
                 fit_seconds, mvox)  # fmt: skip
        print(format_table(results[-1:]), flush=True)
    if args.iso_wall:
        results.append(iso_wall(observed, factor, scorer, args.threads, args.steps))
    return results


def iso_wall(
    observed: Volume, factor: int, scorer: AxialScorer, threads: int, steps: int | None
) -> AxialResult:
    """``vemrestore iso thick.tif out.zarr --method skeleton``, timed end to end."""
    with tempfile.TemporaryDirectory() as work:
        thick, out = Path(work) / "thick.tif", Path(work) / "out.zarr"
        write_volume(observed.data, thick, voxel_size=observed.voxel_size)
        command = [str(Path(sys.executable).with_name("vemrestore")), "iso", str(thick), str(out)]
        command += ["--method", "skeleton", "--factor", str(factor)]
        command += [] if steps is None else ["--steps", str(steps)]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        start = time.perf_counter()
        subprocess.run(command, check=True, env=env, capture_output=True)
        seconds = time.perf_counter() - start
        restored = open_volume(str(out)).to_numpy().astype(np.float32)
    scores = scorer.score(restored)[0]
    log.info("x%d iso wall: %.0f s, %.2f dB", factor, seconds, scores["psnr"])
    mvox = restored.size / 1e6 / seconds
    return AxialResult(DATASET, "iso (command, wall)", factor, seconds, 0.0, mvox, scores)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--rows", nargs="+", default=list(DEFAULT_ROWS), choices=ROWS)
    parser.add_argument("--steps", type=int, default=None, help="training budget of every row")
    parser.add_argument("--iso-wall", action="store_true", help="also time the iso command")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="a 96^3 crop, 20 steps")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    cube = scoring_cube(quick=args.quick)
    if cube is None:
        print("skipped: real data medulla_sample2 not found (set VEMRESTORE_DATA)", file=sys.stderr)
        return 0
    truth, labels = cube
    if args.quick:
        args.steps = 20
    segmenter = load_segmenter("learned")
    results: list[AxialResult] = []
    for factor in args.factors:
        results += bench_factor(truth, labels, factor, tuple(args.rows), args, segmenter)
    print(format_table(results))
    record = provenance(sys.argv if argv is None else ["benchmarks/prior_bench.py", *argv])
    record["threads"] = args.threads
    save_results(results, args.out, record, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
