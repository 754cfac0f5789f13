"""Kill a blockwise `vemrestore iso` run at random moments; every re-run must give the same output.

Makes a synthetic EM-like input Zarr, runs the command once uninterrupted (the
reference), then repeats: start the same command in a fresh output, SIGKILL it
after a random delay (anywhere from start-up to the end of a normal run), run
the command again to completion, and compare with the reference. It also
checks that nothing but the complete output is left beside it (no partial
folder, no run folder, no temporary files).

Example::

    python benchmarks/soak.py --kills 20 --json benchmarks/results/soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from engine_bench import make_synthetic_input

from vemrestore.bench import provenance
from vemrestore.io import open_volume


def _command(src: Path, dst: Path, args: argparse.Namespace) -> list[str]:
    exe = Path(sys.executable).with_name("vemrestore")
    block = [str(n) for n in args.block]
    return [
        str(exe), "iso", str(src), str(dst), "--factor", str(args.factor),
        "--method", args.method, "--block", *block,
    ]  # fmt: skip


def _run(command: list[str], *, kill_after: float | None = None) -> tuple[int, float, str]:
    """Run ``command`` (SIGKILLed after ``kill_after`` s); return code, seconds, stderr."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    if kill_after is not None:
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
    _, err = process.communicate()
    return process.returncode, time.perf_counter() - start, err.decode()


def _rerun(command: list[str], dst: Path) -> tuple[str, float]:
    """Run ``command`` to its end after a kill: "resumed", or "complete" when the killed
    run had already finished its output (the re-run then refuses to replace it)."""
    code, seconds, err = _run(command)
    if code == 0:
        return "resumed", seconds
    if code == 2 and "exists" in err and dst.exists():
        return "complete", seconds
    raise RuntimeError(f"{' '.join(command)} failed ({code}): {err[-2000:]}")


def _leftovers(dst: Path) -> list[str]:
    """Anything beside the output but the output itself."""
    return sorted(p.name for p in dst.parent.iterdir() if p.name != dst.name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--shape", type=int, nargs=3, default=(24, 256, 256))
    parser.add_argument("--factor", type=float, default=4.0)
    parser.add_argument("--method", default="cubic")
    parser.add_argument("--block", type=int, nargs=3, default=(32, 64, 64))
    parser.add_argument(
        "--suffix", default=".zarr", help="Output format: .zarr (resumes blocks) or .tif."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    record = provenance()
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="vemrestore-soak-"))
    try:
        src = work / "input.zarr"
        make_synthetic_input(src, tuple(args.shape), factor=args.factor, seed=args.seed)
        reference_dir = work / "reference"
        reference_dir.mkdir()
        reference_path = reference_dir / f"out{args.suffix}"
        code, normal_seconds, err = _run(_command(src, reference_path, args))
        if code != 0:
            raise RuntimeError(f"the reference run failed ({code}): {err[-2000:]}")
        reference = open_volume(reference_path).to_numpy()
        trials = []
        for index in range(args.kills):
            folder = work / f"trial{index:02d}"
            folder.mkdir()
            dst = folder / f"out{args.suffix}"
            delay = float(rng.uniform(0.2, normal_seconds))
            code, _, _ = _run(_command(src, dst, args), kill_after=delay)
            killed = code == -signal.SIGKILL
            left_after_kill = _leftovers(dst) if killed else []
            outcome, resume_seconds = _rerun(_command(src, dst, args), dst)
            identical = bool(np.array_equal(open_volume(dst).to_numpy(), reference))
            leftovers = _leftovers(dst)
            trials.append(
                {
                    "kill_after_seconds": round(delay, 3),
                    "killed": killed,
                    "output_at_final_path_after_kill": killed and dst.exists(),
                    "left_after_kill": left_after_kill,
                    "rerun": outcome,
                    "rerun_seconds": round(resume_seconds, 3),
                    "identical": identical,
                    "leftovers_after_resume": leftovers,
                }
            )
            print(
                f"trial {index:2d}: kill after {delay:5.2f} s ({'killed' if killed else 'done'}), "
                f"re-run: {outcome}, identical={identical}, leftovers={leftovers}",
                file=sys.stderr,
            )
            shutil.rmtree(folder)
        result = {
            "shape": list(args.shape),
            "factor": args.factor,
            "method": args.method,
            "suffix": args.suffix,
            "block": list(args.block),
            "uninterrupted_seconds": normal_seconds,
            "kills": len(trials),
            "killed_before_the_end": sum(t["killed"] for t in trials),
            "identical": sum(t["identical"] for t in trials),
            "clean": sum(not t["leftovers_after_resume"] for t in trials),
            "trials": trials,
            **record,
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary = {k: v for k, v in result.items() if k not in ("trials", "machine")}
    print(json.dumps(summary, indent=2))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
