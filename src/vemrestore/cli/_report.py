"""``vemrestore report``: one self-contained HTML page of benchmark results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

__all__ = ["report"]


def report(
    results_json: Annotated[
        Path,
        typer.Argument(help="Results JSON (`vemrestore bench --json`, benchmark scripts)."),
    ],
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="HTML file to write (never the results JSON)."),
    ],
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing report.")
    ] = False,
) -> None:
    """Write one self-contained HTML page of benchmark results (a `bench --json` file).

    The page holds the provenance, the results table and, when the JSON has
    figures, planes, error maps, segmentations, FRC and power spectra. It
    needs no network, other files or JavaScript: images are embedded.
    """
    from vemrestore.report import write_report

    typer.echo(str(write_report(results_json, out, overwrite=overwrite)))
