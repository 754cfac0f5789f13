"""``vemrestore bench``: typer options, several values each (repeated, comma- or space-separated).

``--factors 4 8``, ``--factors 4,8`` and ``--factors 4 --factors 8`` all
mean the same; so do the three forms of ``--methods`` and of ``--data``
(whose paths are never split at commas). ``vemrestore bench`` forwards its
raw arguments here (``run_bench_command``): click takes one value per
occurrence, so the space form is spread into repeated options first.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from vemrestore.cli._errors import UsageError, usage_message
from vemrestore.errors import UserInputError

__all__ = ["bench_app", "run_bench_command", "spread_values"]

PROG = "vemrestore bench"
# Options that take several values; the others take one.
MULTI_VALUE_OPTIONS = ("--data", "--factors", "--methods", "--metrics", "--labels")
PROFILES = ("box", "gaussian")

bench_app = typer.Typer(
    add_completion=False,
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def spread_values(argv: list[str]) -> list[str]:
    """``argv`` with each value of a several-value option after its own option name.

    ``--factors 4 8`` becomes ``--factors 4 --factors 8``; other options and
    everything after ``--`` are left as they are.

    Examples
    --------
    >>> spread_values(["--data", "a.tif", "b.tif", "--factors=4", "8", "--json", "o.json"])
    ['--data', 'a.tif', '--data', 'b.tif', '--factors=4', '--factors', '8', '--json', 'o.json']
    """
    out: list[str] = []
    current: str | None = None  # the several-value option whose values follow
    expects_value = False  # the next token is the value of the option just read
    for index, token in enumerate(argv):
        if token == "--":
            return out + argv[index:]
        if token.startswith("-") and not expects_value:
            name, equals, _ = token.partition("=")
            current = name if name in MULTI_VALUE_OPTIONS else None
            expects_value = current is not None and not equals
            out.append(token)
        elif current is not None and not expects_value:
            out += [current, token]
        else:
            out.append(token)
            expects_value = False
    return out


def _split(values: list[str], option: str) -> list[str]:
    """The comma-separated items of every value of ``option`` (empty items dropped)."""
    items = [item.strip() for value in values for item in value.split(",")]
    items = [item for item in items if item]
    if not items:
        raise UserInputError(f"{option} needs at least one value")
    return items


def _factors(values: list[str]) -> list[float]:
    factors = []
    for item in _split(values, "--factors"):
        try:
            factor = float(item)
        except ValueError:
            raise UserInputError(
                f"--factors: {item!r} is not a number (e.g. --factors 4 8 or --factors 4,8)"
            ) from None
        if not factor > 1:
            raise UserInputError(f"--factors: each factor must be > 1, got {item}")
        factors.append(factor)
    return factors


def _method_options(text: str | None) -> dict | None:
    if text is None:
        return None
    try:
        options = json.loads(text)
    except json.JSONDecodeError as error:
        raise UserInputError(f"--options is not valid JSON: {error}") from None
    if not isinstance(options, dict) or not all(isinstance(v, dict) for v in options.values()):
        raise UserInputError(
            '--options must map method names to their options, e.g. \'{"skeleton": '
            '{"train": {"num_steps": 2000}}}\''
        )
    return options


def _check_json_path(path: Path | None, inputs: dict[str, list[str]], *, overwrite: bool) -> None:
    """Refuse a --json that is an input volume, or exists without --overwrite, before the run."""
    from vemrestore.io import check_output_path, refuse_outputs_over_inputs

    if path is None:
        return
    for option, volumes in inputs.items():
        for volume in volumes:
            refuse_outputs_over_inputs({"--json": path}, {option: volume})
    if path.parent.is_dir():  # save_results creates a missing folder
        check_output_path(path, overwrite=overwrite)


@bench_app.command(name="bench")
def bench(
    ctx: typer.Context,
    data: Annotated[
        list[str] | None,
        typer.Option(
            "--data",
            metavar="PATH",
            help="Isotropic ground-truth volumes: --data A.tif B.tif, or --data repeated.",
        ),
    ] = None,
    no_reference: Annotated[
        str | None,
        typer.Option(
            "--no-reference",
            metavar="VOL",
            help="Instead of --data: a real anisotropic volume; restored XZ/YZ planes are "
            "compared with its own XY planes (factor: its z/x voxel size, or --factors K).",
        ),
    ] = None,
    factors: Annotated[
        list[str] | None,
        typer.Option(
            "--factors", metavar="K", help="Axial factors: --factors 4 8 or 4,8 (default 4 8)."
        ),
    ] = None,
    methods: Annotated[
        list[str] | None,
        typer.Option(
            "--methods",
            metavar="NAMES",
            help="Methods, e.g. --methods nearest,cubic (default nearest,linear,cubic).",
        ),
    ] = None,
    metrics: Annotated[
        list[str] | None,
        typer.Option(
            "--metrics",
            metavar="GROUPS",
            help="Measures: psnr,ssim,frc,consistency (default), seg, perceptual, or all.",
        ),
    ] = None,
    labels: Annotated[
        list[str] | None,
        typer.Option(
            "--labels",
            metavar="PATH",
            help="Ground-truth segmentation of each --data volume, for --metrics seg "
            "(without: scored against the segmentation of the true image).",
        ),
    ] = None,
    segmenter: Annotated[
        str,
        typer.Option(
            help="Segmenter of the seg measures: learned (shipped weights) or classical.",
        ),
    ] = "learned",
    profile: Annotated[str, typer.Option(help="Slice profile: box or gaussian.")] = "box",
    options: Annotated[
        str | None,
        typer.Option(
            "--options",
            metavar="JSON",
            help='Per-method config options: \'{"skeleton": {"train": {"num_steps": 2000}}}\'',
        ),
    ] = None,
    json_path: Annotated[
        Path | None,
        typer.Option(
            "--json", metavar="OUT", help="Write results as JSON (never over a --data volume)."
        ),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing --json file.")
    ] = False,
) -> None:
    """Score methods on isotropic volumes: degrade along z, restore, compare.

    Each volume is cut into thick sections of k slices (the forward model),
    restored with each method, and all are scored on the same region
    (trimmed by 2k slices at each z end). Prints a Markdown table; --json
    also keeps crops and curves for `vemrestore report`. With --no-reference,
    a real anisotropic volume is restored and its isotropy scored instead.
    """
    from vemrestore.bench import (
        format_table,
        parse_metrics,
        provenance,
        run_axial_benchmark,
        save_results,
    )

    if profile not in PROFILES:
        raise UserInputError(f"--profile must be box or gaussian, got {profile!r}")
    if (data is None) == (no_reference is None):
        raise UserInputError("give either --data (ground-truth volumes) or --no-reference VOL")
    if no_reference is not None and (labels or metrics):
        raise UserInputError(
            "--no-reference scores isotropy (feature KID, spectra, FRC): --labels and "
            "--metrics apply to --data only"
        )
    names = _split(methods or ["nearest,linear,cubic"], "--methods")
    method_options = _method_options(options)
    groups = parse_metrics(_split(metrics or ["psnr,ssim,frc,consistency"], "--metrics"))
    if labels and "seg" not in groups:
        raise UserInputError("--labels are used by the seg measures: add --metrics seg (or all)")
    inputs = {"--data": data or [], "--no-reference": [no_reference] if no_reference else []}
    inputs["--labels"] = labels or []
    _check_json_path(json_path, inputs, overwrite=overwrite)
    if no_reference is not None:
        report = _isotropy(no_reference, factors, names, method_options, segmenter)
    else:
        report = run_axial_benchmark(
            data,
            factors=_factors(factors or ["4", "8"]),
            methods=names,
            profile=profile,
            method_options=method_options,
            metrics=groups,
            labels=labels,
            segmenter=segmenter,
            figures=json_path is not None,
        )
    print(format_table(report.results))
    if json_path is not None:
        path = save_results(
            report.results,
            json_path,
            provenance(ctx.obj["command"]),
            overwrite=overwrite,
            figures=report.figures,
        )
        print(f"saved {path}", file=sys.stderr)


def _isotropy(
    path: str,
    factors: list[str] | None,
    methods: list[str],
    method_options: dict | None,
    segmenter: str,
):
    """The no-reference (isotropy) benchmark of one real anisotropic volume."""
    from vemrestore.bench._noref import run_isotropy_benchmark

    factor_values = _factors(factors) if factors else [None]
    if len(factor_values) != 1:
        raise UserInputError("--no-reference takes one factor (--factors K)")
    return run_isotropy_benchmark(
        path,
        methods=methods,
        factor=factor_values[0],
        method_options=method_options,
        segmenter=segmenter,
    )


def run_bench_command(argv: list[str]) -> None:
    """Parse ``argv`` (the arguments after ``bench``) and run the benchmark.

    Raises
    ------
    UserInputError
        For a usage error (unknown option, missing ``--data``, a bad value),
        as one line that points to ``vemrestore bench --help``.
    """
    command = typer.main.get_command(bench_app)
    try:
        command.main(
            args=spread_values(list(argv)),
            prog_name=PROG,
            obj={"command": PROG.split() + list(argv)},
            standalone_mode=False,
        )
    except UsageError as error:
        raise UserInputError(usage_message(error)) from None
