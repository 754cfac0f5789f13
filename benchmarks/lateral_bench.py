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

Rows: bicubic (order-3 spline, pixel-centre aligned); network trained with
clean references (upper bound); noisy references with L1 and L2; noisy
references with the noisier-noisy objective; noisy references with LR
synthesised from them (``pairs="synthetic"``: binning + Poisson-Gaussian noise
whose parameters are estimated from the noisy training LR). x4 has the first
three rows only. ``seconds_per_megapixel`` is wall time of ``predict_array``
on the test slices per output megapixel.

Run (full: ~25 min on 2 idle CPU cores, about 2 h when they are shared)::

    nice -n 10 .venv/bin/python benchmarks/lateral_bench.py --threads 1

Smoke run (a minute)::

    .venv/bin/python benchmarks/lateral_bench.py --quick
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from vemrestore.api._lateral import train_lateral
from vemrestore.bench import provenance
from vemrestore.bench.datasets import real_dataset
from vemrestore.degrade import LateralDegradation, PoissonGaussianNoise, estimate_poisson_gaussian
from vemrestore.engine import predict_array
from vemrestore.methods.lateral import upsample_bicubic

RESULTS = Path(__file__).resolve().parent / "results"
WHITE = 255.0
DATA_RANGE = 255.0


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


def score(restored: np.ndarray, clean: np.ndarray) -> dict[str, float]:
    psnr = [
        peak_signal_noise_ratio(c, r, data_range=DATA_RANGE)
        for c, r in zip(clean, restored, strict=True)
    ]
    ssim = [
        structural_similarity(c, r, data_range=DATA_RANGE)
        for c, r in zip(clean, restored, strict=True)
    ]
    return {
        "psnr": float(np.mean(psnr)),
        "ssim": float(np.mean(ssim)),
        "psnr_per_slice": [round(p, 3) for p in psnr],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
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
            hr_train = degrade.crop(train)
            hr_noisy_train = degrade.crop(hr_noisy)
            truth = degrade.crop(test)
            base = {"dataset": dataset, "scale_factor": f, "test_shape": list(lr_info.hr_shape)}
            start = time.perf_counter()
            bicubic = upsample_bicubic(lr_test, f)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    **base,
                    "row": "bicubic",
                    **score(bicubic, truth),
                    "seconds_per_megapixel": seconds / (truth.size / 1e6),
                }
            )
            logging.info("%s", rows[-1])
            steps = args.steps if f == 2 else args.steps_x4
            variants = [
                ("clean reference (upper bound)", hr_train, {"train": {"loss": "l1"}}),
                ("noisy reference, L1", hr_noisy_train, {"train": {"loss": "l1"}}),
                ("noisy reference, L2", hr_noisy_train, {"train": {"loss": "l2"}}),
                (
                    "noisy reference, noisier-noisy (L1)",
                    hr_noisy_train,
                    {"objective": "noisier-noisy", "train": {"loss": "l1"}},
                ),
                (
                    "noisy reference, synthetic LR (L1)",
                    hr_noisy_train,
                    {"pairs": "synthetic", "train": {"loss": "l1"}},
                ),
            ]
            if f != 2:
                variants = variants[:2]
            for name, reference, options in variants:
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
                seconds = time.perf_counter() - start
                row = {
                    **base,
                    "row": name,
                    **score(restored, truth),
                    "seconds_per_megapixel": seconds / (truth.size / 1e6),
                    "train_seconds": method.train_result.seconds,
                    "steps": steps,
                    "loss": options["train"]["loss"],
                    "objective": options.get("objective", "supervised"),
                    "final_val_loss": method.train_result.val_losses[-1][1]
                    if method.train_result.val_losses
                    else None,
                    "pairs": method.config.pairs,
                    "noise_model": {
                        k: method.pair_record.get(k)
                        for k in ("lr_noise", "hr_noise", "added_noise")
                    },
                    "max_registration_shift_lr_px": float(
                        np.abs(method.pair_record.get("registration_shifts_lr_px", 0)).max()
                    ),
                }
                rows.append(row)
                logging.info("%s", {k: v for k, v in row.items() if k != "psnr_per_slice"})
                if dataset == args.datasets[0] and f == 2 and name == "noisy reference, L1":
                    example = {
                        "lr": lr_test[0],
                        "bicubic": bicubic[0],
                        "ours": restored[0],
                        "reference": truth[0],
                    }
    return {"results": rows, "noise": noise_info, "example": example}


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
    out.write_text(json.dumps({**origin, **result}, indent=2, default=str))
    if example:
        png = out.with_name(out.stem + "_epfl_x2.png")
        save_figure(example, png, 2, 128 if args.quick else 256)
        logging.info("wrote %s", png)
    logging.info("wrote %s", out)
    for row in result["results"]:
        print(
            f"{row['dataset']:8s} x{row['scale_factor']}  {row['row']:38s} "
            f"PSNR {row['psnr']:6.2f}  SSIM {row['ssim']:.3f}  "
            f"{row['seconds_per_megapixel']:.2f} s/MP"
        )


if __name__ == "__main__":
    main()
