"""Quality probe of the skeleton method against cubic interpolation on real FIB-SEM.

An isotropic cube is sectioned along z by ``--factor`` (box profile), the
skeleton method is trained on the sections and predicts the whole volume, and
both it and cubic interpolation are scored against the original with the
bench's ``score_restoration`` (PSNR and SSIM with data range 255, axial FRC
resolution against the truth, data consistency), 2 x factor slices trimmed
at each z end.

Example::

    nice -n 10 .venv/bin/python benchmarks/skeleton_probe.py --factor 8 \
        --out benchmarks/results/skeleton_probe_x8.json --set train.loss=l2
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from vemrestore.bench import provenance
from vemrestore.bench._axial import score_restoration
from vemrestore.bench.datasets import real_dataset
from vemrestore.degrade import AxialSectioning
from vemrestore.io import open_volume
from vemrestore.io._volume import Volume
from vemrestore.methods import BlockRequest, load_method
from vemrestore.methods.interpolate import upsample_axial
from vemrestore.methods.skeleton import Skeleton, SkeletonConfig


def set_option(options: dict, assignment: str) -> None:
    """Apply ``a.b=value`` (value parsed as YAML) to a nested dict."""
    key, _, value = assignment.partition("=")
    *parents, leaf = key.split(".")
    for name in parents:
        options = options.setdefault(name, {})
    options[leaf] = yaml.safe_load(value)


def predict(method: Skeleton, sections: np.ndarray, region: tuple[slice, ...]) -> np.ndarray:
    where = method.input_region(region, sections.shape)
    start = tuple(s.start for s in where)
    return method.predict_block(sections[where], BlockRequest(start, region))["restored"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=real_dataset("medulla_sample2"),
        help="isotropic ZYX TIFF (default: medulla sample2)",
    )
    parser.add_argument("--factor", type=float, default=8.0, help="axial scale factor")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="skeleton config option, e.g. train.num_steps=500 or context_planes=1",
    )
    parser.add_argument("--num-threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--blockwise",
        action="store_true",
        help="also predict in two halves along y and x; report the difference",
    )
    parser.add_argument("--save-model", type=Path, default=None, help="save the trained method")
    parser.add_argument(
        "--load-model",
        type=Path,
        default=None,
        help="skip training: evaluate a method saved with --save-model",
    )
    parser.add_argument("--out", type=Path, required=True, help="JSON result file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.data is None:
        parser.error("no --data given and the medulla dataset was not found")
    if args.num_threads is not None:
        torch.set_num_threads(args.num_threads)
    origin = provenance([sys.executable, *sys.argv])  # before the run: the code that ran

    source = open_volume(args.data)
    truth = np.asarray(source.data, dtype=np.float32)
    sectioning = AxialSectioning(args.factor)
    sections, info = sectioning.apply(truth)
    truth = truth[: info.num_fine]
    options: dict = {"method": "skeleton", "scale_factor": args.factor}
    for assignment in args.set:
        set_option(options, assignment)
    config = SkeletonConfig.model_validate(options)

    cubic = upsample_axial(sections, args.factor, kind="cubic")
    t0 = time.perf_counter()
    if args.load_model is not None:
        method = load_method(args.load_model)
        if args.set or method.config.scale_factor != args.factor:
            parser.error("--load-model takes the saved config: drop --set, match --factor")
        config = method.config
    else:
        method = Skeleton(config).fit(Volume(sections), progress=sys.stderr.isatty())
    train_seconds = time.perf_counter() - t0
    whole = tuple(slice(0, s) for s in method.output_shape(sections.shape))
    t0 = time.perf_counter()
    restored = predict(method, sections, whole)
    predict_seconds = time.perf_counter() - t0
    scoring = {"voxel_size_nm": float(source.voxel_size[0]), "data_range": 255.0}
    result = {
        **origin,
        "data": str(args.data),
        "scale_factor": args.factor,
        "config": config.model_dump(mode="json"),
        # PSNR/SSIM (data range 255), axial FRC vs truth, data consistency; trimmed 2k.
        "cubic": score_restoration(truth, cubic, sections, sectioning, **scoring),
        "skeleton": score_restoration(truth, restored, sections, sectioning, **scoring),
        "train_seconds": train_seconds,
        "predict_seconds": predict_seconds,
        "loaded_model": None if args.load_model is None else str(args.load_model),
    }
    if method.train_result is not None:
        history = method.train_result.history
        result["final_train_loss_mean50"] = float(np.mean(history[-50:]))
        result["val_losses"] = method.train_result.val_losses
    result["gain_db"] = result["skeleton"]["psnr"] - result["cubic"]["psnr"]
    if args.blockwise:
        diffs = {}
        for axis in (1, 2):
            cut = restored.shape[axis] // 2
            first, second = list(whole), list(whole)
            first[axis], second[axis] = slice(0, cut), slice(cut, restored.shape[axis])
            parts = np.concatenate(
                [predict(method, sections, tuple(first)), predict(method, sections, tuple(second))],
                axis=axis,
            )
            diffs["yx"[axis - 1]] = float(np.abs(parts - restored).max())
        result["blockwise_max_abs_diff"] = diffs
    if args.save_model is not None:
        method.save(args.save_model)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "cubic",
                    "skeleton",
                    "gain_db",
                    "train_seconds",
                    "predict_seconds",
                )
            }
        )
    )


if __name__ == "__main__":
    main()
