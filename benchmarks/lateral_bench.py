"""Benchmark lateral super-resolution + denoising trained without clean references.

Protocol (per dataset and factor f):

- clean target: the real XY slice (uint8, 0..255);
- noise: Poisson-Gaussian on the detector signal ``255 - slice`` (the slices
  are contrast-inverted: their noise variance grows with ``255 - intensity``),
  parameters estimated from the training slices with
  ``vemrestore.degrade.estimate_poisson_gaussian`` and scaled (both variance
  terms by one factor) so that a noisy HR slice has PSNR ``--hr-psnr`` dB
  against the real slice. LR pixels get the same per-pixel noise model (same
  dwell time per pixel);
- training sees noisy references (real slice + independent noise) and noisy
  binned LR inputs (``LateralDegradation`` binning of the real slice + noise),
  as registered real pairs (``pairs="real"``); the upper-bound row trains
  against the real slices themselves;
- evaluation: LR inputs of slices never used in training (EPFL: 7 of the 27
  non-contiguous slices; medulla: slices of sample2, training on sample1),
  PSNR/SSIM against the real slice (data range 255).

Rows (``--rows``, all by default): ``truth`` (the real test slices scored
as if restored: the ceiling); ``bicubic`` (order-3 spline, pixel-centre
aligned); ``upper-bound``, a network trained with clean references; ``l1`` and
``l2``, noisy references with L1 and L2; ``noisier-noisy``, noisy references
with the noisier-noisy objective; ``synthetic``, noisy references with LR
synthesised from them (``pairs="synthetic"``: binning + Poisson-Gaussian noise
whose parameters are estimated from the noisy training LR). x4 has truth,
bicubic, upper-bound and l1 only. ``seconds_per_megapixel`` is wall time of
``predict_array`` on the test slices per output megapixel.

Structure and perceptual scores, every row through `StructureScorer` on the
test slices:

- ``membrane_f1``: ``boundary_f1(boundary_map(restored) > 0.5,
  boundary_map(truth) > 0.5, tolerance=2)`` with the project's segmenter
  (``vemrestore.metrics.load_segmenter``). Neither data set has membrane
  labels for these slices, so the reference is the segmenter's map of the
  real slice: F1 measures agreement with what the segmenter sees in the
  truth, not with annotated membranes;
- ``seg_vi_split``, ``seg_vi_merge``, ``seg_vi``, ``seg_arand``: the 2D
  segmentation (``segment(..., mode="2d")``) of the restoration against that
  of the real slice, background ignored (``ignore_labels=(0,)``);
- ``feature_kid``: KID between segmenter features of the 64x64 XY tiles of
  the restored and of the real slices (all tiles of all test slices);
- ``ms_ssim`` (MS-SSIM of the XY slices, data range 255) and
  ``spectrum_log_error`` with its 4 bands (radial log power spectra of the XY
  slices at the data's pixel size), at the native pixel size.

Every input of the segmenter is scaled by the real slices'
``PercentileNormalization``. The segmenter was trained on 10 nm FIB-SEM and
4 nm ssTEM; every data set is scored at its own pixel size (EPFL 5 nm, medulla
10 nm). On the EPFL slices its 5 nm boundary maps are continuous membrane
lines (plus vesicles) and its 2D segments follow the cells; 2x2 mean-binning
to 10 nm first gave no better maps (thicker lines, more false membrane specks
in textured cytoplasm) and would hide the 5 nm detail a super-resolution is
judged on, so the slices are not binned.
The ``truth`` row's F1, VI and ARAND are 1 and 0 by construction; its KID
(a set against itself) is the estimator's floor, about 0.

Run (full: ~25 min on 2 idle CPU cores, about 2 h when they are shared)::

    nice -n 10 .venv/bin/python benchmarks/lateral_bench.py --threads 1

The EPFL x2 structure run (``benchmarks/results/lateral_x2_structure.json``)::

    nice -n 10 .venv/bin/python benchmarks/lateral_bench.py --threads 1 --datasets epfl \\
        --factors 2 --rows bicubic truth l1 noisier-noisy upper-bound \\
        --out benchmarks/results/lateral_x2_structure.json

Smoke run (a minute)::

    .venv/bin/python benchmarks/lateral_bench.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vemrestore.api._lateral import train_lateral
from vemrestore.bench import markdown_table, provenance
from vemrestore.bench.datasets import real_dataset
from vemrestore.degrade import LateralDegradation, PoissonGaussianNoise, estimate_poisson_gaussian
from vemrestore.engine import predict_array
from vemrestore.io import atomic_output
from vemrestore.methods.lateral import upsample_bicubic
from vemrestore.metrics import (
    Segmenter,
    adapted_rand_error,
    boundary_f1,
    kernel_inception_distance,
    load_segmenter,
    multiscale_ssim,
    plane_tiles,
    spectrum_log_error,
    variation_of_information,
)
from vemrestore.normalize import PercentileNormalization

RESULTS = Path(__file__).resolve().parent / "results"
WHITE = 255.0
DATA_RANGE = 255.0
PIXEL_NM = {"epfl": 5.0, "medulla": 10.0}
MEMBRANE_THRESHOLD = 0.5
F1_TOLERANCE = 2
KID_TILE = 64
SPECTRUM_BANDS = 4
# Row keys (``--rows``) and their names in the results, in table order.
ROWS = {
    "truth": "truth",
    "bicubic": "bicubic",
    "upper-bound": "clean reference (upper bound)",
    "l1": "noisy reference, L1",
    "l2": "noisy reference, L2",
    "noisier-noisy": "noisy reference, noisier-noisy (L1)",
    "synthetic": "noisy reference, synthetic LR (L1)",
}
X4_ROWS = ("truth", "bicubic", "upper-bound", "l1")


def load_dataset(name: str, quick: bool) -> tuple[np.ndarray, np.ndarray]:
    """(training slices, test slices) as float32 (Z, Y, X); disjoint slices."""
    if name == "epfl":
        path = real_dataset("epfl_slices")
        if path is None:
            raise SystemExit("epfl_slices not found (set VEMRESTORE_DATA to ../shared/data)")
        slices = tifffile.imread(path).astype(np.float32)
        test_ids = np.arange(1, slices.shape[0], 4)  # 7 of 27: 1, 5, ..., 25
        train_ids = np.setdiff1d(np.arange(slices.shape[0]), test_ids)
        train, test = slices[train_ids], slices[test_ids]
        if quick:
            train, test = train[:4, :128, :128], test[:2, :128, :128]
        return train, test
    train_path, test_path = real_dataset("medulla_sample1"), real_dataset("medulla_sample2")
    if train_path is None or test_path is None:
        raise SystemExit("medulla samples not found (set VEMRESTORE_DATA to ../shared/data)")
    train = tifffile.imread(train_path).astype(np.float32)
    test = tifffile.imread(test_path)[5::12].astype(np.float32)  # 21 slices of sample2
    if quick:
        train, test = train[::50, :128, :128], test[:2, :128, :128]
    return train, test


def noise_model(train: np.ndarray, hr_psnr: float) -> tuple[PoissonGaussianNoise, dict[str, Any]]:
    """Noise on the signal ``WHITE - slice``, scaled so noisy HR has PSNR ``hr_psnr``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        estimate = estimate_poisson_gaussian(WHITE - train[:: max(1, train.shape[0] // 8)])
    signal = float(np.mean(WHITE - train))
    target_mse = DATA_RANGE**2 / 10 ** (hr_psnr / 10)
    scale = target_mse / (estimate.gain * signal + estimate.sigma**2)
    model = PoissonGaussianNoise(gain=estimate.gain * scale, sigma=estimate.sigma * scale**0.5)
    info = {
        "estimated_gain": estimate.gain,
        "estimated_sigma": estimate.sigma,
        "variance_scale": scale,
        "gain": model.gain,
        "sigma": model.sigma,
        "domain": f"{WHITE:g} - slice (contrast-inverted detector signal)",
    }
    return model, info


def add_noise(
    clean: np.ndarray, model: PoissonGaussianNoise, rng: np.random.Generator
) -> np.ndarray:
    noisy, _ = model.apply(WHITE - clean, rng=rng)
    return WHITE - noisy


@dataclass
class StructureScorer:
    """Structure and perceptual scores of restored slices against the real ones.

    What depends on the truth alone (its boundary map, 2D segmentation, tile
    features, intensity normalization) is computed once, at construction.

    Parameters
    ----------
    segmenter : Segmenter
        The learned segmenter (boundary maps, 2D segmentations, features).
    truth : numpy.ndarray, shape (Z, Y, X)
        The real slices (0..255).
    pixel_nm : float
        Their pixel size (for the power spectra).
    """

    segmenter: Segmenter
    truth: np.ndarray
    pixel_nm: float
    normalization: PercentileNormalization = field(init=False)

    def __post_init__(self) -> None:
        self.normalization = PercentileNormalization.from_data(self.truth)
        self._boundaries = self.boundaries(self.truth)
        self._labels = self.segment(self.truth)
        self._features = self.features(self.truth)

    def boundaries(self, slices: np.ndarray) -> np.ndarray:
        """Membrane mask: the segmenter's boundary probability above 0.5."""
        bmap = self.segmenter.boundary_map(slices, normalization=self.normalization)
        return bmap > MEMBRANE_THRESHOLD

    def segment(self, slices: np.ndarray) -> np.ndarray:
        """The segmenter's 2D segmentation of each slice."""
        return self.segmenter.segment(slices, mode="2d", normalization=self.normalization)

    def features(self, slices: np.ndarray) -> np.ndarray:
        """Segmenter features of every 64x64 XY tile of the slices."""
        every_tile = slices.size // KID_TILE**2
        tiles = plane_tiles(slices, orientation="xy", tile=KID_TILE, max_tiles=every_tile)
        return self.segmenter.features(tiles, normalization=self.normalization)

    def __call__(self, restored: np.ndarray) -> dict[str, float]:
        """``membrane_f1``, VI, ARAND, ``feature_kid``, ``ms_ssim`` and the spectrum error."""
        labels = self.segment(restored)
        scores = {
            "membrane_f1": boundary_f1(
                self.boundaries(restored), self._boundaries, tolerance=F1_TOLERANCE
            ),
            **variation_of_information(labels, self._labels, ignore_labels=(0,)),
            **adapted_rand_error(labels, self._labels, ignore_labels=(0,)),
            "feature_kid": kernel_inception_distance(self.features(restored), self._features),
            "ms_ssim": multiscale_ssim(restored, self.truth, data_range=DATA_RANGE),
            **spectrum_log_error(
                restored, self.truth, voxel_size=self.pixel_nm, bands=SPECTRUM_BANDS
            ),
        }
        return {k: float(v) for k, v in scores.items()}


def finite(value: float) -> float | None:
    """``value``, or None where it is infinite (the PSNR of the truth itself)."""
    return value if math.isfinite(value) else None


def score(restored: np.ndarray, clean: np.ndarray, structure: StructureScorer) -> dict[str, Any]:
    """Every score of one row: PSNR/SSIM per slice and the structure scores."""
    with np.errstate(divide="ignore"):  # the truth row: MSE 0, PSNR infinite
        psnr = [
            float(peak_signal_noise_ratio(c, r, data_range=DATA_RANGE))
            for c, r in zip(clean, restored, strict=True)
        ]
    ssim = [
        structural_similarity(c, r, data_range=DATA_RANGE)
        for c, r in zip(clean, restored, strict=True)
    ]
    start = time.perf_counter()
    scores = structure(restored)
    return {
        "psnr": finite(float(np.mean(psnr))),
        "ssim": float(np.mean(ssim)),
        "psnr_per_slice": [None if finite(p) is None else round(p, 3) for p in psnr],
        **scores,
        "score_seconds": time.perf_counter() - start,
    }


def variants(
    hr_train: np.ndarray, hr_noisy_train: np.ndarray
) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    """Each trained row's reference slices and ``train_lateral`` options, by row key."""
    return {
        "upper-bound": (hr_train, {"train": {"loss": "l1"}}),
        "l1": (hr_noisy_train, {"train": {"loss": "l1"}}),
        "l2": (hr_noisy_train, {"train": {"loss": "l2"}}),
        "noisier-noisy": (
            hr_noisy_train,
            {"objective": "noisier-noisy", "train": {"loss": "l1"}},
        ),
        "synthetic": (hr_noisy_train, {"pairs": "synthetic", "train": {"loss": "l1"}}),
    }


def trained_row(method: Any, options: dict[str, Any], steps: int) -> dict[str, Any]:
    """The training record of a network row."""
    result, pairs = method.train_result, method.pair_record
    return {
        "train_seconds": result.seconds,
        "steps": steps,
        "loss": options["train"]["loss"],
        "objective": options.get("objective", "supervised"),
        "final_val_loss": result.val_losses[-1][1] if result.val_losses else None,
        "pairs": method.config.pairs,
        "noise_model": {k: pairs.get(k) for k in ("lr_noise", "hr_noise", "added_noise")},
        "max_registration_shift_lr_px": float(
            np.abs(pairs.get("registration_shifts_lr_px", 0)).max()
        ),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    # Loaded first: missing weights should stop the run before the long training.
    segmenter = load_segmenter()
    rows: list[dict[str, Any]] = []
    noise_info: dict[str, Any] = {}
    example: dict[str, np.ndarray] = {}
    for dataset in args.datasets:
        train, test = load_dataset(dataset, args.quick)
        model, info = noise_model(train, args.hr_psnr)
        rng = np.random.default_rng(args.seed)
        hr_noisy = add_noise(train, model, rng)
        info["noisy_hr_psnr"] = float(
            peak_signal_noise_ratio(train, hr_noisy, data_range=DATA_RANGE)
        )
        info["train_slices"], info["test_slices"] = int(train.shape[0]), int(test.shape[0])
        noise_info[dataset] = info
        logging.info("%s: noise %s", dataset, info)
        for f in args.factors:
            degrade = LateralDegradation(f)
            clean_lr_train, _ = degrade.apply(train)
            clean_lr_test, lr_info = degrade.apply(test)
            lr_train = add_noise(clean_lr_train, model, rng)
            lr_test = add_noise(clean_lr_test, model, rng)
            truth = degrade.crop(test)
            structure = StructureScorer(segmenter, truth, PIXEL_NM[dataset])
            base = {"dataset": dataset, "scale_factor": f, "test_shape": list(lr_info.hr_shape)}
            trained = variants(degrade.crop(train), degrade.crop(hr_noisy))
            steps = args.steps if f == 2 else args.steps_x4
            restored_by: dict[str, np.ndarray] = {}
            for key in [k for k in ROWS if k in args.rows and (f == 2 or k in X4_ROWS)]:
                extra: dict[str, Any] = {}
                start = time.perf_counter()
                if key == "truth":
                    restored = truth
                elif key == "bicubic":
                    restored = upsample_bicubic(lr_test, f)
                else:
                    reference, options = trained[key]
                    options["train"].update(
                        num_steps=steps,
                        patch_size=args.patch if f == 2 else args.patch_x4,
                        batch_size=args.batch,
                        seed=args.seed,
                        num_threads=args.threads,
                    )
                    method = train_lateral(
                        reference, lr=lr_train, scale_factor=f, progress=False, **options
                    )
                    start = time.perf_counter()
                    restored = predict_array(method, lr_test)
                    extra = trained_row(method, options, steps)
                seconds = time.perf_counter() - start
                row = {
                    **base,
                    "row": ROWS[key],
                    **score(restored, truth, structure),
                    "seconds_per_megapixel": seconds / (truth.size / 1e6),
                    **extra,
                }
                rows.append(row)
                restored_by[key] = restored
                logging.info("%s", {k: v for k, v in row.items() if k != "psnr_per_slice"})
            if dataset == args.datasets[0] and f == 2 and {"bicubic", "l1"} <= set(restored_by):
                example = {
                    "lr": lr_test[0],
                    "bicubic": restored_by["bicubic"][0],
                    "ours": restored_by["l1"][0],
                    "reference": truth[0],
                }
    segmenter_info = {
        "sha256": segmenter.record.get("sha256"),
        "watershed": segmenter.watershed,
        "pixel_nm": {d: PIXEL_NM[d] for d in args.datasets},
    }
    return {"results": rows, "noise": noise_info, "segmenter": segmenter_info, "example": example}


def format_table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of every row's main scores."""
    columns = [
        ("PSNR", "psnr", ".2f"),
        ("SSIM", "ssim", ".3f"),
        ("MS-SSIM", "ms_ssim", ".3f"),
        ("membrane F1", "membrane_f1", ".3f"),
        ("VI split", "seg_vi_split", ".3f"),
        ("VI merge", "seg_vi_merge", ".3f"),
        ("VI", "seg_vi", ".3f"),
        ("ARAND", "seg_arand", ".3f"),
        ("KID", "feature_kid", ".2e"),
        ("spectrum err", "spectrum_log_error", ".3f"),
        ("s/MP", "seconds_per_megapixel", ".2f"),
    ]
    ids = [("dataset", "dataset"), ("x", "scale_factor"), ("row", "row")]
    return markdown_table(rows, ids=ids, measures=columns)


def save_figure(example: dict[str, np.ndarray], path: Path, scale_factor: int, crop: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h, w = example["reference"].shape
    y0, x0 = (h - crop) // 2, (w - crop) // 2
    panels = {
        f"LR input (x{scale_factor} binned, noisy)": np.kron(
            example["lr"], np.ones((scale_factor,) * 2)
        ),
        "bicubic": example["bicubic"],
        "ours (noisy reference, L1)": example["ours"],
        "reference (real slice)": example["reference"],
    }
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.4))
    for ax, (title, image) in zip(axes, panels.items(), strict=True):
        ax.imshow(
            image[y0 : y0 + crop, x0 : x0 + crop],
            cmap="gray",
            vmin=0,
            vmax=255,
            interpolation="nearest",
        )
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle("EPFL hippocampus 5 nm, held-out slice, centre crop")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, few steps")
    parser.add_argument(
        "--datasets", nargs="+", default=["epfl", "medulla"], choices=["epfl", "medulla"]
    )
    parser.add_argument("--factors", nargs="+", type=int, default=[2, 4])
    parser.add_argument(
        "--rows",
        nargs="+",
        default=list(ROWS),
        choices=list(ROWS),
        help="rows to run, in table order (x4 runs only truth, bicubic, upper-bound, l1)",
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps at x2")
    parser.add_argument("--steps-x4", type=int, default=300, help="training steps at x4")
    parser.add_argument("--patch", type=int, default=48, help="LR patch side at x2")
    parser.add_argument("--patch-x4", type=int, default=32, help="LR patch side at x4")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--hr-psnr", type=float, default=22.0, help="PSNR of noisy HR vs real slice"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (1 is faster than 2 on a busy 2-core machine)",
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON path")
    args = parser.parse_args()
    origin = provenance()  # taken before the run: the commit of the code that ran
    if args.quick:
        args.steps = args.steps_x4 = 3
        args.patch, args.patch_x4 = 16, 8
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    out = args.out or RESULTS / ("lateral_quick.json" if args.quick else "lateral.json")
    start = time.perf_counter()
    result = run(args)
    example = result.pop("example")
    result["wall_seconds"] = time.perf_counter() - start
    result["settings"] = {k: v for k, v in vars(args).items() if k != "out"}
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(out, overwrite=True) as partial:
        partial.write_text(json.dumps({**origin, **result}, indent=2, default=str))
    if example:
        png = out.with_name(out.stem + "_epfl_x2.png")
        save_figure(example, png, 2, 128 if args.quick else 256)
        logging.info("wrote %s", png)
    logging.info("wrote %s", out)
    print(format_table(result["results"]))


if __name__ == "__main__":
    main()
