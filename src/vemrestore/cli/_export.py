"""``vemrestore export``: share a trained model as a bioimage.io model package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from vemrestore.errors import UserInputError

__all__ = ["FORMATS", "export"]

# Package formats ``export`` writes.
FORMATS = ("bioimageio",)


def export(
    model_dir: Annotated[
        Path,
        typer.Argument(help="Skeleton or lateral model folder (`vemrestore train ... --out`)."),
    ],
    out: Annotated[Path, typer.Argument(help="Package to write (.zip); never the model folder.")],
    test_input: Annotated[
        str,
        typer.Option(
            "--test-input",
            help="Real volume the model applies to (thick sections / LR slices); the test "
            "tile is cut from its centre and its voxel size labels the axes.",
        ),
    ],
    format: Annotated[str, typer.Option("--format", help="Package format: bioimageio.")] = (
        "bioimageio"
    ),
    tile: Annotated[
        tuple[int, int, int] | None,
        typer.Option(help="Test tile (z y x) in input voxels; default a small valid tile."),
    ] = None,
    author: Annotated[
        list[str] | None,
        typer.Option("--author", help="Author of the package (repeat for several; default you)."),
    ] = None,
    license: Annotated[
        str, typer.Option("--license", help="SPDX licence of the weights.")
    ] = "CC-BY-4.0",
    url: Annotated[
        str | None,
        typer.Option(
            "--url", help="vemrestore repository URL to cite (default: package metadata)."
        ),
    ] = None,
    channel: Annotated[
        int | None, typer.Option("--channel", help="Channel of a multi-channel --test-input.")
    ] = None,
    overwrite: Annotated[
        bool,
        typer.Option("--overwrite", help="Replace an existing package, once the new one is valid."),
    ] = False,
) -> None:
    """Write a trained model as a bioimage.io package: weights (PyTorch state dict and
    TorchScript), a real test tile and what `vemrestore predict` gives for it, README, cover.

    The package is validated with bioimageio.spec before it appears at OUT.
    """
    if format not in FORMATS:
        raise UserInputError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    from vemrestore.export import export_bioimageio

    result = export_bioimageio(
        model_dir,
        out,
        test_input=test_input,
        tile=tile,
        channel=channel,
        authors=author,
        license=license,
        url=url,
        overwrite=overwrite,
    )
    worst = max(result.max_abs_difference.values())
    typer.echo(
        f"wrote {result.path}: bioimage.io {result.kind} package (validated, status "
        f"{result.status}); its pytorch_state_dict and torchscript weights reproduce "
        f"`vemrestore predict` on the test tile within {worst:.3g} grey levels "
        f"(tolerance {result.tolerance:.3g})"
    )
