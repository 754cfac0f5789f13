"""Blockwise vs whole-array prediction: throughput, peak memory and agreement.

Creates a synthetic EM-like anisotropic input Zarr (smooth random blobs with
dark boundaries plus noise; deterministic), runs ``predict_volume`` to Zarr and
``predict_array`` in memory with the same method, each in its own subprocess so
that peak RSS (``VmHWM``, else ``ru_maxrss``) is measured per run, and reports output Mvox/s,
peak RSS and the max abs difference between the two results. Everything is
repeated with twice the input depth to show how memory grows (whole array)
or does not (blockwise).

Example::

    python benchmarks/engine_bench.py --method cubic --shape 32 512 512 --factor 8 \\
        --json benchmarks/results/engine.json
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from vemrestore.bench import provenance

LATERAL_NM = 4.0  # synthetic lateral voxel size; z is LATERAL_NM * factor


def make_synthetic_input(
    path: Path, shape: tuple[int, int, int], *, factor: float, seed: int = 0
) -> None:
    """Write a deterministic EM-like uint8 volume of ``shape`` (Z, Y, X) to Zarr at ``path``.

    Gaussian-smoothed white noise gives blobs ("cells") with dark boundaries
    at its zero crossings; the smoothing is ``factor`` times shorter in z, as
    in thick sections. Computed and written chunk by chunk with dask, so the
    volume is never held in memory.
    """
    import dask.array as da
    from scipy.ndimage import gaussian_filter

    chunks = (16, 256, 256)
    sigma = (6.0 / factor, 6.0, 6.0)  # blob scale in voxels of the input grid
    rng = da.random.default_rng(seed)
    white = rng.standard_normal(shape, chunks=chunks, dtype=np.float32)
    field = white.map_overlap(
        gaussian_filter,
        depth=tuple(min(math.ceil(4 * s), n - 1) for s, n in zip(sigma, shape, strict=True)),
        boundary="reflect",
        sigma=sigma,
        dtype=np.float32,
    )
    # Variance of Gaussian-filtered unit white noise: prod over axes of 1 / (2 sqrt(pi) sigma).
    field = field / np.float32(
        math.sqrt(np.prod([1 / (2 * math.sqrt(math.pi) * s) for s in sigma]))
    )
    image = 128 + 50 * da.tanh(2 * field) - 90 * da.exp(-((field / 0.25) ** 2))
    image = image + 12 * rng.standard_normal(shape, chunks=chunks, dtype=np.float32)
    da.clip(image, 0, 255).astype(np.uint8).to_zarr(str(path), overwrite=True)


def build_method(name: str, factor: float, model_dir: str | None):
    """The method to benchmark: ``load_method(model_dir)`` or ``create_method(name, ...)``."""
    if model_dir is not None:
        from vemrestore.methods import load_method

        return load_method(model_dir)
    from vemrestore.methods import create_method

    return create_method(name, scale_factor=factor)


def save_results(path: str | None, results: list[dict], origin: dict) -> None:
    """Write ``results`` with ``origin`` (``provenance()`` taken at the start) to ``path``."""
    if path is None:
        return
    record = {"results": results, **origin}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2))
    print(f"saved {path}")


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Print ``rows`` as an aligned text table."""
    cells = [[_fmt(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e-2 else f"{value:.2f}"
    if isinstance(value, list | tuple):
        return "x".join(str(v) for v in value)
    return str(value)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    Linux: ``VmHWM`` from /proc/self/status. ``ru_maxrss`` is not used there
    because a child keeps the parent's peak from before ``exec`` in it (a
    subprocess started by a 500 MiB parent reports >= 500 MiB).
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 2**20 if sys.platform == "darwin" else 2**10  # bytes on macOS, KiB elsewhere
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def _child(args: argparse.Namespace) -> dict:
    """One measured run in this (fresh) process; returns its numbers."""
    import dask.array as da
    import zarr

    from vemrestore.engine import predict_array, predict_volume
    from vemrestore.io import Volume

    method = build_method(args.method, args.factor, args.model_dir)
    factor = method.config.scale_factor
    data = da.from_zarr(args.input)
    volume = Volume(
        data, voxel_size=(LATERAL_NM * factor, LATERAL_NM, LATERAL_NM), source=args.input
    )
    output_shape = method.output_shape(volume.shape)
    baseline = peak_rss_mib()
    start = time.perf_counter()
    if args.child == "blockwise":
        predict_volume(
            method,
            volume,
            args.output,
            block_shape=tuple(args.block_shape),
            num_workers=args.num_workers,
            progress=False,
        )
        result = None
    else:
        result = predict_array(method, np.asarray(data))
    seconds = time.perf_counter() - start
    row = {
        "mode": args.child,
        "input_shape": list(volume.shape),
        "output_shape": list(output_shape),
        "seconds": seconds,
        "output_mvox_per_s": math.prod(output_shape) / seconds / 1e6,
        "peak_rss_mib": peak_rss_mib(),
        "rss_after_imports_mib": baseline,
    }
    if result is not None:
        blockwise = zarr.open_array(store=args.output, path="0", mode="r")
        step = blockwise.chunks[0]
        row["max_abs_diff_vs_blockwise"] = float(
            max(
                np.abs(blockwise[z : z + step] - result[z : z + step]).max()
                for z in range(0, result.shape[0], step)
            )
        )
    return row


def _run_child(args: argparse.Namespace, mode: str, input_path: Path, output_path: Path) -> dict:
    command = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--input",
        str(input_path),
        "--output",
        str(output_path),
        "--method",
        args.method,
        "--factor",
        str(args.factor),
        "--block-shape",
        *map(str, args.block_shape),
    ]
    if args.model_dir:
        command += ["--model-dir", args.model_dir]
    if args.num_workers:
        command += ["--num-workers", str(args.num_workers)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{mode} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="cubic", help="registered method name")
    parser.add_argument("--model-dir", help="a trained method saved by method.save(dir)")
    parser.add_argument(
        "--shape",
        type=int,
        nargs=3,
        default=[64, 1024, 1024],
        metavar=("Z", "Y", "X"),
        help="input shape; repeated at twice Z",
    )
    parser.add_argument("--factor", type=float, default=8, help="axial scale factor")
    parser.add_argument(
        "--block-shape",
        type=int,
        nargs=3,
        default=[64, 256, 256],
        metavar=("Z", "Y", "X"),
        help="output block (= chunk) shape",
    )
    parser.add_argument("--num-workers", type=int, help="local threads (default: one per core)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir", help="where inputs and outputs go (default: a temporary folder)"
    )
    parser.add_argument("--json", help="save results to this JSON file")
    parser.add_argument("--child", choices=["blockwise", "whole"], help=argparse.SUPPRESS)
    parser.add_argument("--input", help=argparse.SUPPRESS)
    parser.add_argument("--output", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    origin = provenance([sys.argv[0], *(sys.argv[1:] if argv is None else argv)])

    if args.child:
        print(json.dumps(_child(args)))
        return
    if args.model_dir:
        try:
            from vemrestore.methods import load_method  # noqa: F401
        except ImportError:
            parser.error("--model-dir needs vemrestore.methods.load_method, not in this version")
    factor = build_method(args.method, args.factor, args.model_dir).config.scale_factor

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        rows = []
        for depth in (args.shape[0], 2 * args.shape[0]):
            shape = (depth, args.shape[1], args.shape[2])
            input_path = Path(workdir) / f"input_{depth}.zarr"
            output_path = Path(workdir) / f"blockwise_{depth}.zarr"
            print(f"input {shape}: writing synthetic volume", flush=True)
            make_synthetic_input(input_path, shape, factor=factor, seed=args.seed)
            for mode in ("blockwise", "whole"):
                print(f"input {shape}: {mode} prediction", flush=True)
                rows.append(_run_child(args, mode, input_path, output_path))
    for row in rows:
        row.update(
            method=args.model_dir or args.method, factor=factor, block_shape=list(args.block_shape)
        )
    print_table(
        rows,
        [
            "mode",
            "input_shape",
            "output_shape",
            "seconds",
            "output_mvox_per_s",
            "peak_rss_mib",
            "max_abs_diff_vs_blockwise",
        ],
    )
    print("whole-array seconds cover reading and predicting, not writing")
    save_results(args.json, rows, origin)


if __name__ == "__main__":
    main()
