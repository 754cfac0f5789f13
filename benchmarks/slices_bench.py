"""Benchmark the restoration of missing and damaged serial sections.

Protocol (per dataset):

- training: the diffusion restorer is trained self-supervised on a stack
  that is never scored (ISBI 2012: ``train_raw.tif``; medulla FIB-SEM:
  ``sample1``); its sections 5, 15, 25, ... are hidden only for validation;
- evaluation stack: a different stack (ISBI: ``test_raw.tif``; medulla: a
  60-section slab of ``sample2``), never seen in training;
- cases, each scored against the hidden truth (8-bit data range 255):
  ``single``: isolated sections hidden (all at once, separated by known sections);
  ``pair``: runs of two consecutive sections hidden;
  ``mask``: synthetic crack/fold/blob masks of ``vemrestore.degrade.SliceDamage``
  on real sections; every masked pixel is treated as unknown and only the
  masked pixels are scored (PSNR on them; SSIM map averaged over them);
- methods: ``slices-linear``, ``slices-flow`` (TV-L1) and ``slices-diffusion``
  (its default, 1 sampling step, and 4 steps), all through
  ``vemrestore.engine.predict_array``; ``seconds_per_section`` is prediction
  wall time per restored section;
- reference row ``linear+blur``: linear interpolation smoothed by a Gaussian
  whose sigma maximises PSNR on the training stack. Where neighbouring
  sections differ a lot (ISBI, 50 nm), PSNR rewards a smooth prediction of
  the mean; this row shows how much of a PSNR gain smoothing alone buys.

Run (full; about 45 min on 2 idle CPU cores, much longer on a shared machine)::

    nice -n 10 .venv/bin/python benchmarks/slices_bench.py

Smoke run (a few minutes)::

    .venv/bin/python benchmarks/slices_bench.py --quick

Results go to ``benchmarks/results/slices.json`` (``slices_quick.json``)
and a figure ``<json stem>_isbi.png`` (neighbours, truth and each method).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch
from scipy.ndimage import gaussian_filter
from skimage.metrics import structural_similarity as skimage_ssim

from vemrestore.bench import provenance
from vemrestore.bench.datasets import real_dataset
from vemrestore.degrade import SliceDamage
from vemrestore.engine import predict_array
from vemrestore.io._volume import Volume
from vemrestore.methods.slices import (
    DiffusionSlices,
    DiffusionSlicesConfig,
    FlowSlices,
    FlowSlicesConfig,
    LinearSlices,
    LinearSlicesConfig,
    SliceDamageMap,
)
from vemrestore.methods.slices.interp import fill_linear
from vemrestore.metrics import peak_signal_noise_ratio, structural_similarity

RESULTS = Path(__file__).resolve().parent / "results"
DATA_RANGE = 255.0
# Sampling steps of the second diffusion row (the first uses the config default, 1 step).
SAMPLED_STEPS = 4


def load(name: str) -> np.ndarray:
    path = real_dataset(name)
    if path is None:
        raise SystemExit(f"dataset {name} not found (set VEMRESTORE_DATA to ../shared/data)")
    return tifffile.imread(path).astype(np.float32)


def datasets(quick: bool) -> dict[str, dict[str, Any]]:
    """Training stack, evaluation stack and hidden sections per dataset."""
    isbi_train, isbi_test = load("isbi_train"), load("isbi_test")
    medulla_train = load("medulla_sample1")
    medulla_test = load("medulla_sample2")[100:160]
    out = {
        "isbi": {
            "train": isbi_train,
            "test": isbi_test,
            "single": [3, 7, 11, 15, 19, 23, 27],
            "pair": [(5, 6), (13, 14), (21, 22)],
            "mask_count": 6,
        },
        "medulla": {
            "train": medulla_train,
            "test": medulla_test,
            "single": [5, 13, 21, 29, 37, 45, 53],
            "pair": [(9, 10), (25, 26), (41, 42)],
            "mask_count": 8,
        },
    }
    if quick:
        for d in out.values():
            d["train"] = d["train"][:20, :128, :128]
            d["test"] = d["test"][:30, :128, :128]
            d["single"], d["pair"], d["mask_count"] = d["single"][:2], d["pair"][:1], 2
    return out


def train_diffusion(train: np.ndarray, steps: int, threads: int) -> tuple[DiffusionSlices, dict]:
    config = DiffusionSlicesConfig(
        train={
            "num_steps": steps,
            "device": "cpu",
            "num_threads": threads,
            "validate_every": max(1, steps // 6),
            "checkpoint_every": steps,
        }
    )
    method = DiffusionSlices(config)
    start = time.perf_counter()
    method.fit(Volume(train), progress=False)
    r = method.train_result
    info = {
        "steps": r.steps,
        "seconds": round(time.perf_counter() - start, 1),
        "val_losses": [(s, round(v, 5)) for s, v in r.val_losses],
        "config": config.model_dump(mode="json"),
    }
    return method, info


BLUR_SIGMAS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0)


def blurred_linear(damaged: np.ndarray, damage: SliceDamageMap, sigma: float) -> np.ndarray:
    """Linear interpolation, Gaussian-smoothed in-plane on the restored voxels only."""
    mask = damage.region_mask(tuple(slice(0, n) for n in damaged.shape))  # type: ignore[arg-type]
    out = fill_linear(damaged, mask)
    if sigma > 0:
        for z in damage.damaged:
            out[z][mask[z]] = gaussian_filter(out[z], sigma)[mask[z]]
    return out


def choose_blur(train: np.ndarray) -> float:
    """Sigma maximising the PSNR of blurred linear interpolation of single training sections."""
    ids = list(range(1, train.shape[0] - 1, 2))
    scores = []
    for sigma in BLUR_SIGMAS:
        values = []
        for z in ids:
            linear = 0.5 * (train[z - 1] + train[z + 1])
            estimate = gaussian_filter(linear, sigma) if sigma else linear
            values.append(peak_signal_noise_ratio(train[z], estimate, data_range=DATA_RANGE))
        scores.append(np.mean(values))
    return BLUR_SIGMAS[int(np.argmax(scores))]


def masked_psnr(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    """PSNR over the voxels in ``mask`` (data range 255)."""
    return peak_signal_noise_ratio(reference[mask][None], test[mask][None], data_range=DATA_RANGE)


def masked_ssim(reference: np.ndarray, test: np.ndarray, mask: np.ndarray) -> float:
    """Mean of the SSIM map (Wang et al. settings) over ``mask``."""
    _, full = skimage_ssim(
        reference,
        test,
        data_range=DATA_RANGE,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        full=True,
    )
    return float(full[mask].mean())


def score_case(
    truth: np.ndarray, restored: np.ndarray, damage: SliceDamageMap
) -> tuple[float, float, list[float]]:
    """PSNR over all restored voxels, mean SSIM over restored sections/regions, per-section PSNR."""
    mask = damage.region_mask(tuple(slice(0, n) for n in truth.shape))  # type: ignore[arg-type]
    psnr = masked_psnr(truth, restored, mask)
    per_section, ssims = [], []
    for z in damage.damaged:
        m = mask[z]
        per_section.append(round(masked_psnr(truth[z], restored[z], m), 3))
        if m.all():
            ssims.append(structural_similarity(truth[z], restored[z], data_range=DATA_RANGE))
        else:
            ssims.append(masked_ssim(truth[z], restored[z], m))
    return psnr, float(np.mean(ssims)), per_section


def cases(data: dict[str, Any], seed: int) -> dict[str, tuple[np.ndarray, SliceDamageMap]]:
    """Damaged inputs and damage maps: single, pair, mask."""
    test = data["test"]
    out = {}
    single = SliceDamageMap.build(test.shape, missing=data["single"])
    pair = SliceDamageMap.build(test.shape, missing=[z for p in data["pair"] for z in p])
    for name, damage in (("single", single), ("pair", pair)):
        damaged = test.copy()
        damaged[list(damage.missing)] = 0
        out[name] = (damaged, damage)
    damaged, info = SliceDamage(kinds=("crack", "fold", "blob"), count=data["mask_count"]).apply(
        test, rng=seed
    )
    out["mask"] = (damaged, SliceDamageMap.build(test.shape, mask=info.mask))
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    steps = {"isbi": args.steps, "medulla": args.medulla_steps}
    if args.quick:
        steps = {"isbi": 20, "medulla": 20}
    results, training, figures = [], {}, {}
    for name, data in datasets(args.quick).items():
        if name not in args.datasets:
            continue
        logging.info("%s: training diffusion for %d steps", name, steps[name])
        diffusion, info = train_diffusion(data["train"], steps[name], args.threads)
        info["blur_sigma"] = choose_blur(data["train"])
        training[name] = info
        sampled = diffusion.with_inference(num_inference_steps=SAMPLED_STEPS)
        methods = {
            "linear": LinearSlices(LinearSlicesConfig()),
            "flow": FlowSlices(FlowSlicesConfig()),
            "diffusion": diffusion,
            f"diffusion-{SAMPLED_STEPS}step": sampled,
        }
        for case, (damaged, damage) in cases(data, args.seed).items():
            restored_by = {}
            for label, method in [*methods.items(), ("linear+blur", None)]:
                start = time.perf_counter()
                if method is None:
                    restored = blurred_linear(damaged, damage, info["blur_sigma"])
                else:
                    method.set_damage(damage)
                    restored = predict_array(method, damaged)
                seconds = time.perf_counter() - start
                psnr, ssim, per_section = score_case(data["test"], restored, damage)
                restored_by[label] = restored
                row = {
                    "dataset": name,
                    "case": case,
                    "method": label,
                    "sections": list(damage.damaged),
                    "psnr": round(psnr, 3),
                    "ssim": round(ssim, 4),
                    "psnr_per_section": per_section,
                    "seconds_per_section": round(seconds / len(damage.damaged), 2),
                }
                logging.info("%s", row)
                results.append(row)
            figures[(name, case)] = (data["test"], damage, restored_by)
    return {"results": results, "training": training, "figures": figures}


def format_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| dataset | case | method | PSNR (dB) | SSIM | s/section |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['dataset']} | {r['case']} | {r['method']} | {r['psnr']:.2f} | "
            f"{r['ssim']:.3f} | {r['seconds_per_section']:.2f} |"
        )
    return "\n".join(lines)


def save_figure(figures: dict, path: Path) -> None:
    """Rows: a single hidden section and a masked section; columns: neighbours, truth, methods."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = []
    test, damage, restored = figures[("isbi", "single")]
    z = damage.missing[len(damage.missing) // 2]
    rows.append(("missing section", z, None, restored))
    _, damage, restored = figures[("isbi", "mask")]
    z = max(damage.partial, key=lambda k: damage.partial[k].sum())
    rows.append(("masked region", z, damage.partial[z], restored))
    labels = [
        "above",
        "below",
        "truth",
        "linear",
        "linear+blur",
        "flow",
        "diffusion",
        f"diffusion-{SAMPLED_STEPS}step",
    ]
    fig, axes = plt.subplots(len(rows), len(labels), figsize=(3 * len(labels), 3.2 * len(rows)))
    size = min(256, test.shape[1])
    crop = (slice(0, size), slice(0, size))
    for r, (title, z, mask, restored_by) in enumerate(rows):
        images = [test[z - 1], test[z + 1], test[z]] + [restored_by[k][z] for k in labels[3:]]
        for c, (label, image) in enumerate(zip(labels, images, strict=True)):
            ax = axes[r, c]
            ax.imshow(image[crop], cmap="gray", vmin=0, vmax=255)
            text = f"{label} (z={z - 1 if c == 0 else z + 1 if c == 1 else z})"
            if c >= 3:
                m = np.ones(test.shape[1:], bool) if mask is None else mask
                p = masked_psnr(test[z], image, m)
                text = f"{label}: {p:.2f} dB"
            if c == 2 and mask is not None:
                ax.contour(mask[crop], levels=[0.5], colors="r", linewidths=0.5)
            ax.set_title(text if c else f"{title}\n{text}", fontsize=9)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run on small crops")
    parser.add_argument("--steps", type=int, default=3000, help="ISBI training steps")
    parser.add_argument("--medulla-steps", type=int, default=600, help="medulla training steps")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic masks")
    parser.add_argument(
        "--datasets", default="isbi,medulla", help="comma-separated subset of isbi,medulla"
    )
    parser.add_argument("--out", type=Path, default=None, help="JSON output path")
    args = parser.parse_args()
    origin = provenance()  # taken before the run: the commit of the code that ran
    args.datasets = args.datasets.split(",")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    start = time.perf_counter()
    outcome = run(args)
    suffix = "_quick" if args.quick else ""
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {
        "results": outcome["results"],
        "training": outcome["training"],
        "total_seconds": round(time.perf_counter() - start, 1),
        **origin,
    }
    out = args.out or RESULTS / f"slices{suffix}.json"
    out.write_text(json.dumps(record, indent=2))
    if "isbi" in args.datasets:
        save_figure(outcome["figures"], out.with_name(f"{out.stem}_isbi.png"))
    print(format_table(outcome["results"]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
