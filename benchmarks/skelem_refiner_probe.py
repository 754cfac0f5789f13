"""How much of the skeleton's residual SkelEM's refiner restores, where the truth is known.

The refiner is judged in its own domain: XY patches of held-out sections,
degraded along one lateral axis by the axial forward model (the pairs it
trains on), so the sharp patch is the truth. The medulla cube (sample2) is
sectioned by ``--factor``; the frozen skeleton is the shipped prior (no
fine-tune); the refiner starts from its shipped prior and fine-tunes
self-supervised on the other sections, as ``vemrestore iso --method skelem``
does (``--from-scratch``: from random weights; ``--steps`` sets the budget).
For each sampler setting (truncated starts at several strengths, the one
matched to the skeleton's held-out error, and sampling from pure noise) and
``--samples`` seeds:

- ``gain_one_db`` / ``gain_mean_db``: PSNR gain over the skeleton of one
  sample and of the mean of the samples (negative: the refiner hurts);
- ``sample_rms_ratio``: RMS of one sampled residual over that of the true
  residual (about 1 for a sampler of the right amplitude, 0 for the skeleton
  alone); ``mean_rms_ratio`` the same for the mean of the samples (below the
  former where the samples disagree);
- ``std_error_spearman``: rank correlation of the per-pixel std over the
  samples with the absolute error of their mean (``uncertainty_error_correlation``);
- ``magnitude_error_spearman``: the same for the magnitude of the mean
  sampled residual against the skeleton's absolute error (does the refiner
  act where the skeleton is wrong?).

Beside them, ``skeleton_gradient_spearman``: the rank correlation of the
skeleton output's gradient magnitude with its absolute error, what a map
without any sampling reaches.

Reproduce (about 5 minutes on one core)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/skelem_refiner_probe.py --factor 8 \
        --out benchmarks/results/skelem_refiner_probe_x8.json
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
from scipy import ndimage as ndi

from vemrestore import api
from vemrestore.bench import provenance, save_record
from vemrestore.bench.datasets import scoring_cube
from vemrestore.degrade import AxialSectioning
from vemrestore.io import Volume
from vemrestore.methods.skelem import SkelEM
from vemrestore.methods.skelem.refiner import refine_planes, skeleton_pairs
from vemrestore.methods.skeleton_prior import shipped_skeleton
from vemrestore.metrics import uncertainty_error_correlation
from vemrestore.normalize import PercentileNormalization
from vemrestore.train import holdout_sections

NUM_PATCHES, PATCH = 64, 64
SETTINGS = (  # (label, inference options)
    ("truncated 0.15", {"strength": 0.15}),
    ("truncated 0.3", {"strength": 0.3}),
    ("truncated 0.5", {"strength": 0.5}),
    ("truncated 0.7", {"strength": 0.7}),
    ("full, 4 steps", {"mode": "full", "num_inference_steps": 4}),
    ("full, 20 steps", {"mode": "full", "num_inference_steps": 20}),
)


def sampled_residuals(method: SkelEM, cond: np.ndarray, samples: int, **options) -> np.ndarray:
    """(samples, N, H, W) residuals of the XZ refiner, in normalised units."""
    inference = method.config.inference.model_copy(update=options)
    origin = (np.arange(len(cond)), 0, 0)
    out = [
        refine_planes(
            method.networks["xz"],
            cond,
            sampling=inference,
            diffusion=method.config.diffusion,
            key=(index, 0),
            origin=origin,
            device=torch.device("cpu"),
            context=torch.inference_mode,
        )
        for index in range(samples)
    ]
    return np.stack(out) * np.float32(method.residual_scale)


def scores(residuals: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Scores of sampled residuals against the true residual (truth - skeleton)."""
    mean = residuals.mean(axis=0)
    skeleton_mse = float(np.mean(truth**2))

    def gain(estimate: np.ndarray) -> float:
        return 10 * np.log10(skeleton_mse / float(np.mean((truth - estimate) ** 2)))

    return {
        "gain_one_db": gain(residuals[0]),
        "gain_mean_db": gain(mean),
        "sample_rms_ratio": float(np.sqrt(np.mean(residuals[0] ** 2) / skeleton_mse)),
        "mean_rms_ratio": float(np.sqrt(np.mean(mean**2) / skeleton_mse)),
        "std_error_spearman": uncertainty_error_correlation(residuals.std(axis=0), mean, truth),
        "magnitude_error_spearman": uncertainty_error_correlation(
            np.abs(mean), np.zeros_like(truth), truth
        ),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--factor", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=None, help="refiner steps (default: its own)")
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="train the refiner from random weights (the rows before the shipped refiner "
        "prior); default: the shipped prior and its fine-tune, as `vemrestore iso` does",
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cube = scoring_cube(quick=False)
    if cube is None:
        print("skipped: real data medulla_sample2 not found (set VEMRESTORE_DATA)", file=sys.stderr)
        return 0
    sections = AxialSectioning(args.factor).apply(cube[0])[0].astype(np.float32)
    observed = Volume(sections, voxel_size=(10.0 * args.factor, 10.0, 10.0))
    with tempfile.TemporaryDirectory() as work:
        skeleton = Path(work) / "skeleton"
        prior = shipped_skeleton(args.factor, PercentileNormalization.from_data(sections))
        prior.save(skeleton)
        method = api.configure(
            "skelem",
            factor=args.factor,
            steps=args.steps,
            from_scratch=args.from_scratch,
            skeleton_path=skeleton,
            cycle=None,
        )
        start = time.perf_counter()
        method.fit_refiner(observed, progress=False)
        fit_seconds = time.perf_counter() - start
    normalized = method.skeleton.normalization.apply(sections)
    _, held_out = holdout_sections(len(normalized))
    cond, truth = skeleton_pairs(
        method.skeleton,
        normalized,
        held_out,
        num=NUM_PATCHES,
        patch_size=PATCH,
        rng=np.random.default_rng(9),
    )
    truth = truth[:, 0]
    gradient = np.stack([np.hypot(ndi.sobel(p, 0), ndi.sobel(p, 1)) for p in cond[:, 0]])
    gradient_spearman = uncertainty_error_correlation(gradient, np.zeros_like(truth), truth)
    matched = method.config.inference.strength
    rows = {}
    for label, options in (*SETTINGS, (f"truncated {matched:g} (matched)", {})):
        rows[label] = scores(sampled_residuals(method, cond, args.samples, **options), truth)
        print(label, json.dumps({k: round(v, 3) for k, v in rows[label].items()}), flush=True)
    record = {
        **provenance(sys.argv if argv is None else ["benchmarks/skelem_refiner_probe.py", *argv]),
        "factor": args.factor,
        "refiner": "from scratch" if args.from_scratch else "shipped prior, fine-tuned",
        "refiner_steps": method.train_result.steps,
        "fit_seconds": fit_seconds,
        "refiner_val_losses": method.train_result.val_losses,
        "skeleton_error": method.skeleton_error,
        "matched_strength": matched,
        "skeleton_gradient_spearman": gradient_spearman,
        "samples": args.samples,
        "patches": [NUM_PATCHES, PATCH, PATCH],
        "rows": rows,
    }
    save_record(record, args.out, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
