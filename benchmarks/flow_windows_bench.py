"""Optical-flow slice restoration on windows around the damage against on whole sections.

``fill_flow`` estimates each TV-L1 flow on a window around a damaged region,
``FLOW_MARGIN`` pixels wider on every side and at least ``MIN_FLOW_WINDOW``
pixels wide, instead of on the whole section; sections no wider than that are
never split. This script measures what windows change, in one run, on real
serial-section TEM (ISBI 2012 test_raw, 30 x 512 x 512) tiled 2 x 2 into
sections of 1024 x 1024 (``--tiles``; the seams are artificial, the motion
between sections within each tile is real): synthetic crack, fold and blob
masks of ``SliceDamage`` (``--count`` damaged sections, one mask per seed)
are filled with ``margin=None`` (whole sections) and with the defaults, in
alternating order. Per seed: seconds of each, their ratio, the PSNR of each
against the real voxels under the mask, and the mean absolute difference
between the two fills there. ``--min-window`` overrides the least window
side (``--tiles 1 --min-window 256`` is the measurement that set the default).

Reproduce (about 10 minutes on one core)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/flow_windows_bench.py \\
        --out benchmarks/results/flow_windows.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from slices_bench import masked_psnr  # a sibling script: benchmarks/ is on sys.path

from vemrestore.bench import provenance, real_dataset, save_record
from vemrestore.degrade import SliceDamage
from vemrestore.io import open_volume
from vemrestore.methods.slices.interp import FLOW_MARGIN, MIN_FLOW_WINDOW, fill_flow


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=8, help="damaged sections per mask")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--tiles", type=int, default=2, help="tiles per side of a section")
    parser.add_argument("--min-window", type=int, default=MIN_FLOW_WINDOW)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    path = real_dataset("isbi_test")
    if path is None:
        print(
            "skipped: real data isbi2012 test_raw not found (set VEMRESTORE_DATA)", file=sys.stderr
        )
        return 0
    truth = np.tile(open_volume(path).to_numpy().astype(np.float32), (1, args.tiles, args.tiles))
    rows = []
    for seed in args.seeds:
        damage = SliceDamage(kinds=("crack", "fold", "blob"), count=args.count)
        damaged, info = damage.apply(truth, rng=seed)
        mask = info.mask
        fills, seconds = {}, {}
        runs = [("whole", None), ("windows", FLOW_MARGIN)]
        for label, margin in runs if seed % 2 else runs[::-1]:  # neither always runs first
            start = time.perf_counter()
            fills[label] = fill_flow(
                damaged, mask, slice(0, len(damaged)), margin=margin, min_window=args.min_window
            )
            seconds[label] = time.perf_counter() - start
        row = {
            "seed": seed,
            "damaged_fraction": float(mask.mean()),
            "seconds_whole": seconds["whole"],
            "seconds_windows": seconds["windows"],
            "speedup": seconds["whole"] / seconds["windows"],
            "psnr_whole": masked_psnr(truth, fills["whole"], mask),
            "psnr_windows": masked_psnr(truth, fills["windows"], mask),
            "mean_abs_difference": float(np.abs(fills["whole"] - fills["windows"])[mask].mean()),
        }
        rows.append(row)
        print(json.dumps({k: round(v, 4) for k, v in row.items()}), flush=True)
    record = {
        **provenance(sys.argv if argv is None else ["benchmarks/flow_windows_bench.py", *argv]),
        "data": f"isbi2012_sstem/test_raw.tif, sections tiled {args.tiles} x {args.tiles}",
        "margin": FLOW_MARGIN,
        "min_window": args.min_window,
        "count": args.count,
        "rows": rows,
    }
    save_record(record, args.out, overwrite=True)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
