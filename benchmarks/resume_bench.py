"""Kill a blockwise prediction half-way (SIGKILL), resume it, compare with an uninterrupted run.

Runs ``predict_volume`` on a synthetic input in a subprocess, polls the
completion ledger and kills the process once about half of the blocks are
done, checks that only the partial output is left, re-runs the same command,
and compares the result with an uninterrupted run (identical or not, max abs
difference, blocks skipped and recomputed, timings).

Example::

    python benchmarks/resume_bench.py --method cubic --shape 32 512 512 --factor 4 \\
        --json benchmarks/results/resume.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from engine_bench import (
    LATERAL_NM,
    build_method,
    make_synthetic_input,
    print_table,
    save_results,
)

from vemrestore.bench import provenance


class _CountingMethod:
    """Delegates to a method and counts ``predict_block`` calls (blocks computed)."""

    def __init__(self, method) -> None:
        self.method = method
        self.calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        if name == "method":
            raise AttributeError(name)
        return getattr(self.method, name)

    def predict_block(self, block: np.ndarray, request) -> dict[str, np.ndarray]:
        """The wrapped method's outputs (a dict by name) for one block, counted."""
        with self._lock:
            self.calls += 1
        return self.method.predict_block(block, request)


def _child(args: argparse.Namespace) -> dict:
    """One ``predict_volume`` run in this process; returns blocks computed and seconds."""
    import dask.array as da

    from vemrestore.engine import predict_volume
    from vemrestore.io import Volume

    method = _CountingMethod(build_method(args.method, args.factor, args.model_dir))
    factor = method.config.scale_factor
    volume = Volume(
        da.from_zarr(args.input),
        voxel_size=(LATERAL_NM * factor, LATERAL_NM, LATERAL_NM),
        source=args.input,
    )
    start = time.perf_counter()
    predict_volume(
        method,
        volume,
        args.output,
        block_shape=tuple(args.block_shape),
        num_workers=args.num_workers,
        progress=False,
    )
    return {"blocks_computed": method.calls, "seconds": time.perf_counter() - start}


def _command(args: argparse.Namespace, input_path: Path, output_path: Path) -> list[str]:
    command = [
        sys.executable,
        __file__,
        "--child",
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
    return command


def _run(command: list[str]) -> dict:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _run_and_kill(command: list[str], ledger: Path, kill_at: int) -> tuple[int, float]:
    """Start ``command``, SIGKILL it once ``ledger`` holds ``kill_at`` markers.

    Returns the number of markers at the kill and the seconds it ran.
    """
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while process.poll() is None:
        if ledger.is_dir() and len(os.listdir(ledger)) >= kill_at:
            os.kill(process.pid, signal.SIGKILL)
            break
        time.sleep(0.01)
    process.wait()
    seconds = time.perf_counter() - start
    if process.returncode != -signal.SIGKILL:
        sys.exit(
            f"the run ended (code {process.returncode}) before it could be killed; use a larger "
            f"--shape or smaller --block-shape\n{process.stderr.read().decode()}"
        )
    return len(os.listdir(ledger)), seconds


def _compare(a: Path, b: Path) -> tuple[bool, float]:
    import zarr

    x = zarr.open_array(store=str(a), path="0", mode="r")
    y = zarr.open_array(store=str(b), path="0", mode="r")
    if x.shape != y.shape:
        return False, float("inf")
    step = x.chunks[0]
    identical, diff = True, 0.0
    for z in range(0, x.shape[0], step):
        u, v = x[z : z + step], y[z : z + step]
        identical &= bool(np.array_equal(u, v))
        diff = max(diff, float(np.abs(u.astype(np.float64) - v).max()))
    return identical, diff


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="cubic", help="registered method name")
    parser.add_argument("--model-dir", help="a trained method saved by method.save(dir)")
    parser.add_argument(
        "--shape", type=int, nargs=3, default=[32, 512, 512], metavar=("Z", "Y", "X")
    )
    parser.add_argument("--factor", type=float, default=4, help="axial scale factor")
    parser.add_argument(
        "--block-shape",
        type=int,
        nargs=3,
        default=[32, 128, 128],
        metavar=("Z", "Y", "X"),
        help="output block (= chunk) shape",
    )
    parser.add_argument("--num-workers", type=int, help="local threads (default: one per core)")
    parser.add_argument("--kill-fraction", type=float, default=0.5, help="kill after this share")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", help="where inputs and outputs go (default: temporary)")
    parser.add_argument("--json", help="save results to this JSON file")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
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
    method = build_method(args.method, args.factor, args.model_dir)
    factor = method.config.scale_factor
    output_shape = method.output_shape(tuple(args.shape))
    total = math.prod(math.ceil(n / b) for n, b in zip(output_shape, args.block_shape, strict=True))
    kill_at = max(1, round(args.kill_fraction * total))

    with tempfile.TemporaryDirectory(dir=args.workdir) as workdir:
        work = Path(workdir)
        input_path = work / "input.zarr"
        print(f"input {tuple(args.shape)}: writing synthetic volume", flush=True)
        make_synthetic_input(input_path, tuple(args.shape), factor=factor, seed=args.seed)
        print("uninterrupted run", flush=True)
        reference = _run(_command(args, input_path, work / "reference.zarr"))
        output = work / "resumed.zarr"
        partial = work / ".resumed.zarr.partial"
        print(f"run killed after {kill_at} of {total} blocks", flush=True)
        done_at_kill, killed_s = _run_and_kill(
            _command(args, input_path, output), partial / ".vemrestore" / "done", kill_at
        )
        partial_left, final_absent = partial.is_dir(), not output.exists()
        print("resumed run", flush=True)
        resumed = _run(_command(args, input_path, output))
        identical, max_abs_diff = _compare(work / "reference.zarr", output)
    row = {
        "method": args.model_dir or args.method,
        "input_shape": list(args.shape),
        "output_shape": list(output_shape),
        "block_shape": list(args.block_shape),
        "blocks_total": total,
        "blocks_done_at_kill": done_at_kill,
        "blocks_skipped": total - resumed["blocks_computed"],
        "blocks_recomputed": resumed["blocks_computed"],
        "partial_left_after_kill": partial_left,
        "no_final_output_after_kill": final_absent,
        "identical": identical,
        "max_abs_diff": max_abs_diff,
        "uninterrupted_s": reference["seconds"],
        "killed_run_wall_s": killed_s,  # includes interpreter start-up
        "resumed_run_s": resumed["seconds"],
    }
    print_table([row], list(row)[4:10])
    print_table([row], list(row)[10:])
    save_results(args.json, [row], origin)


if __name__ == "__main__":
    main()
