"""SkelEM against cubic, the skeleton and full-length diffusion on real FIB-SEM (axial SR).

The isotropic medulla cube (sample2, 10 nm voxels) is sectioned along z by
each factor (box profile). Every learned model is trained self-supervised on
the sections only (the whole cube's sections); the ground truth is used only
to score. One skeleton is trained per factor and frozen; SkelEM loads it
(``skeleton_path``), trains its refiner and fine-tunes the XZ/YZ refiners for
cycle consistency. The skeleton row is that same skeleton.

Restorations are predicted for a central output region (whole sections in z,
the network halo read from the whole input, as the blockwise engine does) and
scored on that region without trimming:

- PSNR, SSIM (data range 255);
- ``frc_xz_nm``: FRC between restored and true XZ planes, frequencies within
  30 degrees of z, 1/7 threshold (the bench protocol's axial resolution vs truth);
- ``frc_xz_single_nm``: single-image XZ FRC of the output alone, beside the
  truth's own (``truth_frc_xz_single_nm``). It measures how fine the output's
  self-similar detail is, not whether it is right: invented texture also
  lowers it, and interpolation overstates it (see ``plane_frc_resolution``);
- data-consistency PSNR: the output re-sectioned vs the observed sections;
- network evaluations per output voxel (nominal, halo excluded), seconds and
  output Mvox/s of the prediction (training time separately).

Methods on the main region: cubic; skeleton; skeleton + projection (the
data-consistency projection alone); skelem-raw (refiner, no projection);
skelem (with the projection, the default). On a smaller central region, with
the main-region outputs cropped to it: skelem and skelem-nocycle (the refiner
before cycle fine-tuning) predicted on that region, skelem at other
truncation levels (``strength``), the mean of ``samples`` skelem samples, and
full-length diffusion from pure noise with the same network (``mode="full"``,
``full_steps`` steps); each with and without the projection (``-raw``).
Projections are computed with ``consistency_correction``, the function
``predict_block`` uses; the script checks that they equal the method's own
projected output on a slab (``projection_check_max_abs``).

Also an XZ figure per factor (input, cubic, skeleton, skelem, truth, the
per-voxel standard deviation over ``--samples`` seeds, and the
data-consistency residual).

Reproduce (about 30 min on 2 shared CPU cores, 1 torch thread)::

    nice -n 10 .venv/bin/python benchmarks/skelem_bench.py

Smoke test (a few minutes)::

    nice -n 10 .venv/bin/python benchmarks/skelem_bench.py --quick
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import torch

from vemrestore.bench import provenance, real_dataset
from vemrestore.bench._scores import AXIAL_SECTOR_DEG
from vemrestore.degrade import AxialSectioning, sectioning_matrix
from vemrestore.io import Volume
from vemrestore.methods import BlockRequest, create_method
from vemrestore.methods.skelem import SkelEM, SkelEMConfig, consistency_correction
from vemrestore.methods.skeleton import Skeleton, SkeletonConfig
from vemrestore.metrics import (
    data_consistency_psnr,
    peak_signal_noise_ratio,
    plane_frc_resolution,
    structural_similarity,
)

log = logging.getLogger("skelem_bench")

DATA_RANGE = 255.0

# (full run, --quick) settings; each can be overridden with --set.
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "region": (128, 128, 128),
        "full_region": (64, 64, 64),
        "samples": 4,
        "full_steps": 50,
        "strength_sweep": (0.15, 0.5),
        "skeleton": {
            "base_channels": 16,
            "depth": 2,
            "inference": {"halo": 16, "batch_size": 16},
            "train": {
                "num_steps": 1000,
                "batch_size": 8,
                "patch_size": 48,
                "learning_rate": 2e-3,
                "validate_every": 250,
                "checkpoint_every": 10_000,
            },
        },
        "skelem": {
            "base_channels": 16,
            "depth": 2,
            "inference": {"halo": 16, "batch_size": 16, "num_inference_steps": 4, "strength": 0.3},
            "pool_size": 2048,
            "train": {
                "num_steps": 2000,
                "batch_size": 8,
                "patch_size": 32,
                "learning_rate": 1e-3,
                "validate_every": 500,
                "checkpoint_every": 10_000,
            },
            "cycle": {
                "crop_sections": 3,
                "margin": 8,
                "num_crops": 8,
                "train": {
                    "num_steps": 60,
                    "patch_size": 24,
                    "batch_size": 1,
                    "learning_rate": 5e-4,
                    "validate_every": 20,
                    "checkpoint_every": 10_000,
                },
            },
        },
    },
    "quick": {
        "region": (48, 48, 48),
        "full_region": (32, 32, 32),
        "samples": 2,
        "full_steps": 10,
        "strength_sweep": (0.5,),
        "skeleton": {
            "base_channels": 8,
            "depth": 2,
            "inference": {"halo": 8},
            "train": {"num_steps": 30, "batch_size": 4, "patch_size": 32, "validate_every": 30},
        },
        "skelem": {
            "base_channels": 8,
            "depth": 2,
            "inference": {"halo": 8},
            "pool_size": 64,
            "train": {"num_steps": 30, "batch_size": 4, "patch_size": 32, "validate_every": 30},
            "cycle": {
                "crop_sections": 2,
                "num_crops": 2,
                "train": {"num_steps": 4, "patch_size": 16, "validate_every": 4},
            },
        },
    },
}


def set_option(options: dict, assignment: str) -> None:
    """Apply ``a.b=value`` (value parsed as JSON, else kept as text) to a nested dict."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    for name in parents:
        options = options.setdefault(name, {})
    try:
        options[leaf] = json.loads(value)
    except json.JSONDecodeError:
        options[leaf] = value


def central_region(
    shape: tuple[int, int, int], size: tuple[int, int, int], factor: int
) -> tuple[slice, slice, slice]:
    """Central output region of ``size`` with z on whole sections (``factor`` divides it)."""
    sz = size[0] // factor * factor
    z0 = (shape[0] // factor - sz // factor) // 2 * factor
    lateral = [
        slice((n - s) // 2, (n - s) // 2 + s) for n, s in zip(shape[1:], size[1:], strict=True)
    ]
    return (slice(z0, z0 + sz), *lateral)


def predict(
    method: Any, sections: np.ndarray, region: tuple[slice, ...], output: str = "restored"
) -> np.ndarray:
    """Output ``output`` of one ``predict_block`` call for ``region``, reading the halo the
    method asks for."""
    where = method.input_region(region, sections.shape)
    start = tuple(s.start for s in where)
    request = BlockRequest(start, region, (output,))  # type: ignore[arg-type]
    return method.predict_block(sections[where], request)[output]


def timed(fn, *args) -> tuple[Any, float]:
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


def project(restored: np.ndarray, observed: np.ndarray, factor: int) -> np.ndarray:
    """Data-consistency projection of a region that covers whole sections (box profile)."""
    weights = sectioning_matrix(restored.shape[0], factor)
    return restored + consistency_correction(restored, observed, weights)


def score(
    restored: np.ndarray,
    truth: np.ndarray,
    observed: np.ndarray,
    sectioning: AxialSectioning,
    voxel_nm: float,
) -> dict[str, float]:
    vs = (voxel_nm,) * 3
    return {
        "psnr": peak_signal_noise_ratio(truth, restored, data_range=DATA_RANGE),
        "ssim": structural_similarity(truth, restored, data_range=DATA_RANGE),
        "frc_xz_nm": plane_frc_resolution(
            restored, orientation="xz", voxel_size=vs, reference=truth, sector_deg=AXIAL_SECTOR_DEG
        ).resolution_nm,
        "frc_xz_single_nm": plane_frc_resolution(
            restored, orientation="xz", voxel_size=vs
        ).resolution_nm,
        "consistency_psnr": data_consistency_psnr(
            observed, restored, sectioning, data_range=DATA_RANGE
        ),
    }


def row(name: str, restored: np.ndarray, seconds: float | None, nfe: float, **extra) -> dict:
    return {
        "method": name,
        "nfe_per_voxel": nfe,
        "seconds": seconds,
        "mvox_per_s": None if seconds is None else restored.size / 1e6 / seconds,
        **extra,
    }


def run_factor(
    truth_full: np.ndarray, factor: int, settings: dict, voxel_nm: float, workdir: Path
) -> tuple[dict, dict]:
    """All rows for one factor, and the planes for the figure."""
    sectioning = AxialSectioning(factor)
    sections, info = sectioning.apply(truth_full)
    truth = truth_full[: info.num_fine]
    observed = Volume(sections, voxel_size=(voxel_nm * factor, voxel_nm, voxel_nm))
    region = central_region(truth.shape, settings["region"], factor)
    small = central_region(truth.shape, settings["full_region"], factor)
    inner = tuple(
        slice(s.start - r.start, s.stop - r.start) for s, r in zip(small, region, strict=True)
    )
    sec = slice(region[0].start // factor, region[0].stop // factor)
    sec_small = slice(small[0].start // factor, small[0].stop // factor)
    obs_region = sections[sec, region[1], region[2]]
    obs_small = sections[sec_small, small[1], small[2]]
    t_region, t_small = truth[region], truth[small]
    log.info(
        "x%d: sections %s, region %s, full-mode region %s",
        factor,
        sections.shape,
        [(s.start, s.stop) for s in region],
        [(s.start, s.stop) for s in small],
    )

    outputs: dict[str, np.ndarray] = {}
    rows: list[dict] = []
    small_rows: list[dict] = []
    fits: dict[str, float] = {}

    cubic = create_method("cubic", scale_factor=factor)
    outputs["cubic"], sec_cubic = timed(predict, cubic, sections, region)
    rows.append(row("cubic", outputs["cubic"], sec_cubic, 0))

    skeleton = Skeleton(SkeletonConfig(scale_factor=factor, **settings["skeleton"]))
    _, fits["skeleton"] = timed(lambda: skeleton.fit(observed, progress=False))
    skeleton.save(workdir / f"skeleton_x{factor}")
    outputs["skeleton"], sec_skel = timed(predict, skeleton, sections, region)
    rows.append(row("skeleton", outputs["skeleton"], sec_skel, 2, fit_seconds=fits["skeleton"]))
    outputs["skeleton+projection"] = project(outputs["skeleton"], obs_region, factor)
    rows.append(row("skeleton+projection", outputs["skeleton"], sec_skel, 2))

    options = copy.deepcopy(settings["skelem"])
    options.update(skeleton_path=str(workdir / f"skeleton_x{factor}"))
    options["inference"] = {**options.get("inference", {}), "consistency_projection": False}
    method = SkelEM(SkelEMConfig(scale_factor=factor, **options))
    _, fits["refiner"] = timed(lambda: method.fit_refiner(observed, progress=False))
    before_cycle = method.with_inference()  # keeps the refiners fit_cycle replaces
    _, fits["cycle"] = timed(lambda: method.fit_cycle(observed, progress=False))
    steps = method.config.inference.num_inference_steps
    nfe = 2 + 2 * steps
    outputs["skelem-raw"], sec_skelem = timed(predict, method, sections, region)
    outputs["skelem"] = project(outputs["skelem-raw"], obs_region, factor)
    fit_total = fits["skeleton"] + fits["refiner"] + fits["cycle"]
    rows.append(row("skelem-raw", outputs["skelem-raw"], sec_skelem, nfe))
    rows.append(row("skelem", outputs["skelem"], sec_skelem, nfe, fit_seconds=fit_total))
    # The method's own projection equals the post-hoc one (a thin slab suffices).
    slab = (region[0], slice(region[1].start, region[1].start + 1), region[2])
    own = predict(method.with_inference(consistency_projection=True), sections, slab)
    projection_check = float(np.abs(own - outputs["skelem"][:, :1]).max())

    # The smaller region: full-length diffusion from pure noise with the same
    # network, the refiner before cycle fine-tuning, and other truncation levels.
    small_outputs: dict[str, np.ndarray] = {}
    for name in ("cubic", "skeleton", "skeleton+projection"):
        small_outputs[name] = outputs[name][inner]
        small_rows.append(row(name, small_outputs[name], None, 0 if name == "cubic" else 2))
    full_steps = settings["full_steps"]
    variants = {
        "skelem": (method, nfe),
        "skelem-nocycle": (before_cycle, nfe),
        **{
            f"skelem-strength{s:g}": (method.with_inference(strength=s), nfe)
            for s in settings["strength_sweep"]
        },
        f"skelem-mean{settings['samples']}": (
            method.with_inference(num_samples=settings["samples"]),
            2 + 2 * steps * settings["samples"],
        ),
        "full": (
            method.with_inference(mode="full", num_inference_steps=full_steps),
            2 + 2 * full_steps,
        ),
    }
    for name, (variant, cost) in variants.items():
        raw, seconds = timed(predict, variant, sections, small)
        small_outputs[f"{name}-raw"] = raw
        small_outputs[name] = project(raw, obs_small, factor)
        small_rows.append(row(f"{name}-raw", raw, seconds, cost))
        small_rows.append(row(name, raw, seconds, cost))

    for r in rows:
        r.update(score(outputs[r["method"]], t_region, obs_region, sectioning, voxel_nm))
    for r in small_rows:
        r.update(score(small_outputs[r["method"]], t_small, obs_small, sectioning, voxel_nm))
    vs = (voxel_nm,) * 3
    truth_frc = {
        "region": plane_frc_resolution(t_region, orientation="xz", voxel_size=vs).resolution_nm,
        "full_region": plane_frc_resolution(t_small, orientation="xz", voxel_size=vs).resolution_nm,
    }

    # Maps for the figure: one XZ plane (y at the region centre), whole region in z and x.
    y = region[1].start + (region[1].stop - region[1].start) // 2
    plane = (region[0], slice(y, y + 1), region[2])
    samples = method.with_inference(num_samples=settings["samples"])
    std_plane, sec_std = timed(predict, samples, sections, plane, "std")
    residual_plane = predict(method, sections, plane, "consistency")
    yi = y - region[1].start
    figure = {
        "input": np.repeat(sections[sec, y, region[2]], factor, axis=0),
        "cubic": outputs["cubic"][:, yi],
        "skeleton": outputs["skeleton"][:, yi],
        "skelem": outputs["skelem"][:, yi],
        "truth": t_region[:, yi],
        "std": std_plane[:, 0],
        "residual": residual_plane[:, 0],
    }
    extra = {
        "factor": factor,
        "region": [[s.start, s.stop] for s in region],
        "full_region": [[s.start, s.stop] for s in small],
        "truth_frc_xz_single_nm": truth_frc,
        "fit_seconds": fits,
        "refiner_val_losses": method.train_result.val_losses,
        "cycle_val_losses": method.cycle_result.val_losses,
        "cycle_terms": method.cycle_terms,
        "residual_scale": method.residual_scale,
        "projection_check_max_abs": projection_check,
        "uncertainty": {
            "num_samples": settings["samples"],
            "seconds": sec_std,
            "mean_std": float(std_plane.mean()),
            "max_std": float(std_plane.max()),
        },
        "consistency_residual_plane_mean_abs": float(np.abs(residual_plane).mean()),
        "config": method.config.model_dump(mode="json"),
        "rows": rows,
        "full_region_rows": small_rows,
    }
    return extra, figure


def save_figure(figures: dict[int, dict[str, np.ndarray]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["input", "cubic", "skeleton", "skelem", "truth", "std", "residual"]
    titles = {
        "input": "input (sections)",
        "std": "uncertainty (std)",
        "residual": "consistency residual",
    }
    fig, axes = plt.subplots(
        len(figures),
        len(names),
        figsize=(2.3 * len(names), 2.5 * len(figures)),
        squeeze=False,
        constrained_layout=True,
    )
    for row_axes, (factor, planes) in zip(axes, sorted(figures.items()), strict=True):
        lo, hi = np.percentile(planes["truth"], [0.5, 99.5])
        for ax, name in zip(row_axes, names, strict=True):
            image = planes[name]
            if name == "std":
                ax.imshow(image, cmap="magma", vmin=0, vmax=float(np.percentile(image, 99.5)))
            elif name == "residual":
                bound = float(np.percentile(np.abs(image), 99.5)) or 1.0
                ax.imshow(image, cmap="RdBu_r", vmin=-bound, vmax=bound)
            else:
                ax.imshow(image, cmap="gray", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{titles.get(name, name)}", fontsize=8)
        row_axes[0].set_ylabel(f"x{factor}: XZ (z down)")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_rows(rows: list[dict], truth_frc: float) -> str:
    header = (
        "| method | PSNR | SSIM | XZ FRC vs truth (nm) | XZ single-image FRC (nm) "
        f"[truth {truth_frc:.1f}] | consistency PSNR | NFE/voxel | seconds | Mvox/s |"
    )
    lines = [header, "|" + "---|" * 9]
    for r in rows:
        sec = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        rate = "-" if r["mvox_per_s"] is None else f"{r['mvox_per_s']:.3f}"
        lines.append(
            f"| {r['method']} | {r['psnr']:.2f} | {r['ssim']:.4f} | {r['frc_xz_nm']:.1f} | "
            f"{r['frc_xz_single_nm']:.1f} | {r['consistency_psnr']:.1f} | "
            f"{r['nfe_per_voxel']} | {sec} | {rate} |"
        )
    return "\n".join(lines)


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="isotropic ZYX TIFF")
    parser.add_argument("--factors", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting, e.g. skelem.inference.strength=0.4 or region=[64,64,64]",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 is fastest on a busy machine)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    origin = provenance()  # taken before the run: the commit of the code that ran
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    data = args.data or real_dataset("medulla_sample2")
    if data is None:
        parser.error("no --data given and the medulla dataset was not found")
    settings = copy.deepcopy(SETTINGS["quick" if args.quick else "full"])
    for assignment in args.set:
        set_option(settings, assignment)
    for key in ("region", "full_region", "strength_sweep"):
        settings[key] = tuple(settings[key])
    truth = tifffile.imread(data).astype(np.float32)
    voxel_nm = 10.0
    name = "skelem_quick" if args.quick else "skelem"
    results, figures = [], {}
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for factor in args.factors:
            result, figures[factor] = run_factor(truth, factor, settings, voxel_nm, Path(tmp))
            results.append(result)
            for key, label in (("rows", "region"), ("full_region_rows", "full_region")):
                print(f"\nx{factor}, {label} {result[label]}:")
                print(format_rows(result[key], result["truth_frc_xz_single_nm"][label]))
            sys.stdout.flush()
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {
        "results": results,
        "data": str(data),
        "settings": settings,
        "total_seconds": time.perf_counter() - start,
        "torch_threads": args.threads,
        **origin,
    }
    (args.out / f"{name}.json").write_text(json.dumps(_json_safe(payload), indent=2))
    save_figure(figures, args.out / f"{name}_xz.png")
    print(f"wrote {args.out / f'{name}.json'} and {args.out / f'{name}_xz.png'}")


if __name__ == "__main__":
    main()
