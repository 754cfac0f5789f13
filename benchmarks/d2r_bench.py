"""D2R against cubic, the skeleton, SkelEM and supervised training on real FIB-SEM (axial SR).

The isotropic medulla cube (sample2, 10 nm voxels, never used for training
anything shipped) is sectioned along z by each factor (box profile); every
self-supervised model sees only those sections, the truth is used only to
score. Rows:

- ``cubic``: the cubic spline;
- ``skeleton``: the 2D skeleton U-Net, trained on the sections' XY planes;
- ``skelem``: that skeleton, frozen, plus the SkelEM refiners;
- ``recovered``: D2R's stage II alone, the mean of the XZ and YZ volumes the
  2D diffusion model (``diffusion2d``) restores, plane by plane;
- ``d2r``: the 3D network trained on those recovered volumes (stage III),
  run alone on the sections;
- ``d2r-skeleton``: the same 3D network trained on the skeleton's XZ/YZ
  restorations (what the diffusion teacher contributes);
- ``supervised``: the same 3D network trained on isotropic sample1 sectioned
  along z (real pairs, the "comparable to supervised" reference).

Each row is scored with all measures of ``vemrestore bench --metrics all``
(PSNR/SSIM, axial FRC vs truth, data consistency, segmentation VI/ARAND
against the ground-truth bodies with the shipped segmenter, feature KID,
MS-SSIM, spectra, z high-frequency power). Seconds per stage are recorded
(teacher training, stage II, stage III training, prediction) and the output
Mvox/s of the prediction; the skeleton row's teacher time is shared with
``d2r-skeleton``, whose stage II reuses it.

Reproduce (about 1 h per factor on one core of a 2-core machine)::

    OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python benchmarks/d2r_bench.py --factors 8 \
        --out benchmarks/results/d2r_x8.json

Smoke test (minutes)::

    .venv/bin/python benchmarks/d2r_bench.py --quick --out /tmp/d2r_quick.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vemrestore.bench import provenance, real_dataset
from vemrestore.bench._axial import TRUTH_ROW, AxialResult, format_table, save_results
from vemrestore.bench._scores import section_cube
from vemrestore.bench.datasets import QUICK_CROP, scoring_cube
from vemrestore.engine import predict_array
from vemrestore.io import Volume, open_volume
from vemrestore.methods import XZ, YZ, create_method
from vemrestore.metrics import load_segmenter

log = logging.getLogger("d2r_bench")
ROWS = ("cubic", "skeleton", "skelem", "recovered", "d2r", "d2r-skeleton", "supervised")


def _budgets(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Config options of every trained model, from the step budgets."""
    quick = {"patch_size": 32, "batch_size": 4} if args.quick else {}
    return {
        "skeleton": {"train": {"num_steps": args.skeleton_steps, **quick}},
        "diffusion2d": {
            "train": {"num_steps": args.teacher_steps, **quick},
            "inference": {"num_inference_steps": args.sampling_steps},
            **({"pool_size": 64} if args.quick else {}),
        },
        "skelem": {  # the refiner options of the published rows (SkelEM's defaults then)
            "base_channels": 32,
            "depth": 3,
            "inference": {"strength": 0.3},
            "train": {
                "num_steps": args.refiner_steps,
                "batch_size": 16,
                "patch_size": 64,
                "learning_rate": 5e-4,
                "validate_every": 200,
                **quick,
            },
            "cycle": {"train": {"num_steps": args.cycle_steps}},
            **({"pool_size": 64} if args.quick else {}),
        },
        "d2r": {"train": {"num_steps": args.network_steps}},
    }


class Timer:
    """Wall seconds of named stages."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def run(self, name: str, fn, *args, **kwargs):
        start = time.perf_counter()
        value = fn(*args, **kwargs)
        self.seconds[name] = time.perf_counter() - start
        log.info("%s: %.1f s", name, self.seconds[name])
        return value


def bench_factor(
    truth: np.ndarray,
    reference: np.ndarray,
    labels: np.ndarray | None,
    factor: int,
    rows: tuple[str, ...],
    args: argparse.Namespace,
    segmenter: Any,
) -> list[AxialResult]:
    dataset = "medulla_fibsem_10nm/sample2_raw"
    budgets = _budgets(args)
    cube = section_cube(
        truth, factor, labels=labels, segmenter=segmenter, voxel_size_nm=10.0, source=dataset
    )
    sections, observed, scorer, fine = cube.sections, cube.observed, cube.scorer, cube.fine
    results: list[AxialResult] = []
    scores, _ = scorer.score(fine)
    results.append(AxialResult(dataset, TRUTH_ROW, factor, 0, 0, 0, scores))

    def add(name: str, timer: Timer, fit_seconds: float, *, method=None, restored=None) -> None:
        """Score ``restored``, or ``method``'s prediction (timed), as row ``name``."""
        seconds, mvox = 0.0, 0.0
        if method is not None:
            start = time.perf_counter()
            restored = predict_array(method, sections)
            seconds = time.perf_counter() - start
            mvox = restored.size / 1e6 / max(seconds, 1e-9)
        row_scores, _ = scorer.score(restored)
        stages = {f"{k}_seconds": v for k, v in timer.seconds.items()}
        row_scores = {**row_scores, **stages, "predict_seconds": seconds}
        total = fit_seconds + seconds
        results.append(AxialResult(dataset, name, factor, total, fit_seconds, mvox, row_scores))
        log.info("x%d %s: %.2f dB, %.1f s", factor, name, row_scores["psnr"], total)
        print(format_table(results[-1:]), flush=True)

    options = {"scale_factor": factor}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if "cubic" in rows:
            add("cubic", Timer(), 0.0, method=create_method("cubic", **options))
        need_skeleton = {"skeleton", "skelem", "d2r-skeleton"} & set(rows)
        if need_skeleton:
            timer = Timer()
            skeleton = timer.run(
                "teacher",
                create_method("skeleton", **options, **budgets["skeleton"]).fit,
                observed,
                progress=False,
            )
            skeleton_seconds = timer.seconds["teacher"]
            if "skeleton" in rows:
                add("skeleton", timer, skeleton_seconds, method=skeleton)
            if "skelem" in rows:
                skeleton.save(work / "skeleton")
                skelem_timer = Timer()
                skelem = skelem_timer.run(
                    "refiner",
                    create_method(
                        "skelem", **options, skeleton_path=work / "skeleton", **budgets["skelem"]
                    ).fit,
                    observed,
                    progress=False,
                )
                fit = skeleton_seconds + skelem_timer.seconds["refiner"]
                add("skelem", skelem_timer, fit, method=skelem)
            if "d2r-skeleton" in rows:
                add_d2r("d2r-skeleton", skeleton, timer, observed, work, budgets, add)
        if {"recovered", "d2r"} & set(rows):
            timer = Timer()
            teacher = timer.run(
                "teacher",
                create_method("diffusion2d", **options, **budgets["diffusion2d"]).fit,
                observed,
                progress=False,
            )
            add_d2r(
                "d2r", teacher, timer, observed, work, budgets, add, recovered="recovered" in rows
            )
        if "supervised" in rows:
            timer = Timer()
            method = create_method("d2r", **options, teacher="skeleton", **budgets["d2r"])
            reference_volume = Volume(reference, voxel_size=(10.0, 10.0, 10.0))
            timer.run("network", method.fit_supervised, reference_volume, observed, progress=False)
            add("supervised", timer, timer.seconds["network"], method=method)
    return results


def add_d2r(name, teacher, timer, observed, work, budgets, add, *, recovered=False) -> None:
    """Stage II with ``teacher`` (timed), optionally its fused row, then stage III and its row."""
    factor = round(teacher.config.scale_factor)
    kind = "skeleton" if teacher.name == "skeleton" else "diffusion"
    teacher_options = teacher.config.model_dump(exclude={"method", "scale_factor", "profile"})
    d2r = create_method(
        "d2r",
        scale_factor=factor,
        teacher=kind,
        teacher_options=teacher_options,
        **budgets["d2r"],
    )
    folder = work / name
    volumes = timer.run("recovered", d2r.recover, teacher, observed, folder, progress=False)
    if recovered:
        fused = 0.5 * (volumes[XZ].to_numpy() + volumes[YZ].to_numpy())
        stage_two = timer.seconds["teacher"] + timer.seconds["recovered"]
        add("recovered", timer, stage_two, restored=fused)
    timer.run("network", d2r.fit_network, observed, volumes, progress=False)
    fit = sum(timer.seconds[k] for k in ("teacher", "recovered", "network"))
    add(name, timer, fit, method=d2r)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factors", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--skeleton-steps", type=int, default=600)
    parser.add_argument("--refiner-steps", type=int, default=400)
    parser.add_argument("--cycle-steps", type=int, default=100)
    parser.add_argument("--teacher-steps", type=int, default=600)
    parser.add_argument("--sampling-steps", type=int, default=4)
    parser.add_argument("--network-steps", type=int, default=400)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="tiny budgets, a 96^3 crop")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    if args.quick:
        for key in ("skeleton_steps", "refiner_steps", "teacher_steps", "network_steps"):
            setattr(args, key, 10)
        args.cycle_steps = 2
    cube, reference_path = scoring_cube(quick=args.quick), real_dataset("medulla_sample1")
    if cube is None or reference_path is None:
        print(
            "skipped: medulla sample1 or sample2 not found (set VEMRESTORE_DATA)", file=sys.stderr
        )
        return 0
    truth, labels = cube
    reference = open_volume(reference_path).to_numpy().astype(np.float32)
    if args.quick:
        reference = reference[QUICK_CROP]
    segmenter = load_segmenter("learned")
    results: list[AxialResult] = []
    for factor in args.factors:
        results += bench_factor(truth, reference, labels, factor, tuple(args.rows), args, segmenter)
    print(format_table(results))
    record = provenance(sys.argv if argv is None else ["benchmarks/d2r_bench.py", *argv])
    record["threads"] = args.threads
    save_results(results, args.out, record, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
