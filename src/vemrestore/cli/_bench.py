"""``vemrestore bench``: argparse, because its options take several values each."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import NoReturn

from vemrestore.errors import UserInputError

__all__ = ["run_bench_command"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2 via the CLI's handler
        raise UserInputError(f"bench: {message} (see `vemrestore bench --help`)")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vemrestore bench",
        description=(
            "Degrade isotropic volumes along z (thick sections), restore them with each "
            "method, and score all on the same region (trimmed by 2k slices at each z end)."
        ),
    )
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="PATH", help="Isotropic ground-truth volumes."
    )
    parser.add_argument(
        "--factors",
        nargs="+",
        type=float,
        default=[4.0, 8.0],
        metavar="K",
        help="Axial factors (default 4 8).",
    )
    parser.add_argument(
        "--methods", default="nearest,linear,cubic", help="Comma-separated method names."
    )
    parser.add_argument(
        "--profile", choices=["box", "gaussian"], default="box", help="Slice profile (default box)."
    )
    parser.add_argument(
        "--options",
        default=None,
        metavar="JSON",
        help='Per-method config options, e.g. \'{"skeleton": {"train": {"num_steps": 2000}}}\'.',
    )
    parser.add_argument(
        "--json",
        dest="json_path",
        type=Path,
        default=None,
        metavar="OUT",
        help="Write results as JSON (never over a --data volume).",
    )
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --json file.")
    return parser


def _check_json_path(path: Path | None, data: list[str], *, overwrite: bool) -> None:
    """Refuse a --json that is a --data volume, or exists without --overwrite, before the run."""
    from vemrestore.io import check_output_path
    from vemrestore.io._paths import refuse_outputs_over_inputs

    if path is None:
        return
    for volume in data:
        refuse_outputs_over_inputs({"--json": path}, {"--data": volume})
    if path.parent.is_dir():  # save_results creates a missing folder
        check_output_path(path, overwrite=overwrite)


def run_bench_command(argv: list[str]) -> None:
    """Parse ``argv``, run the axial benchmark, print the Markdown table, save JSON."""
    from vemrestore.bench import format_table, provenance, run_axial_benchmark, save_results

    parser = _parser()
    if any(a in ("-h", "--help") for a in argv):
        parser.print_help()
        return
    args = parser.parse_args(argv)
    _check_json_path(args.json_path, args.data, overwrite=args.overwrite)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    try:
        options = json.loads(args.options) if args.options else None
    except json.JSONDecodeError as error:
        raise UserInputError(f"--options is not valid JSON: {error}") from None
    results = run_axial_benchmark(
        args.data,
        factors=args.factors,
        methods=methods,
        profile=args.profile,
        method_options=options,
    )
    print(format_table(results))
    if args.json_path is not None:
        path = save_results(
            results,
            args.json_path,
            provenance(["vemrestore", "bench", *argv]),
            overwrite=args.overwrite,
        )
        print(f"saved {path}", file=sys.stderr)
