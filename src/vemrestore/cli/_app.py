"""The typer application and its commands."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from vemrestore.cli._errors import UserErrorGroup
from vemrestore.cli._restore import (
    check_output_early,
    configured_method,
    file_signature,
    finish_run,
    fit_in_run,
    input_signature,
    outputs_of,
    predict_outputs,
    start_run,
)
from vemrestore.errors import UserInputError

__all__ = ["app", "main"]

app = typer.Typer(
    cls=UserErrorGroup,
    name="vemrestore",
    help="Restore volume EM data: axial super-resolution, missing slices, lateral SR, benchmarks.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

_AXES = {"z": 0, "y": 1, "x": 2}

Factor = Annotated[
    float,
    typer.Option(
        "--factor", "-k", help="Axial factor k (> 1), e.g. 8 for 80 nm sections at 10 nm voxels."
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
Channel = Annotated[
    int | None, typer.Option("--channel", help="Channel to use from a multi-channel file.")
]


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )


@app.command()
def info(
    path: Annotated[str, typer.Argument(help="Volume: .tif, .h5:/dataset, .zarr, .mrc")],
    channel: Channel = None,
) -> None:
    """Print shape, dtype, voxel size and format of a volume."""
    from vemrestore.io import describe_volume, open_volume

    description = describe_volume(open_volume(path, channel=channel))
    for key, value in description.items():
        typer.echo(f"{key}: {value}")


@app.command()
def degrade(
    src: Annotated[str, typer.Argument(help="Isotropic input volume.")],
    dst: Annotated[str, typer.Argument(help="Output volume (thick sections).")],
    factor: Factor,
    axis: Annotated[str, typer.Option(help="Axis to section along: z, y or x.")] = "z",
    profile: Annotated[
        str, typer.Option(help="Slice profile: box (mean of k slices) or gaussian.")
    ] = "box",
    fwhm: Annotated[
        float | None, typer.Option(help="Gaussian FWHM in fine slices (default k).")
    ] = None,
    channel: Channel = None,
    overwrite: Overwrite = False,
) -> None:
    """Simulate thick sections: the forward model used to make test data."""
    import numpy as np

    from vemrestore.degrade import AxialSectioning
    from vemrestore.io import Volume, check_finite, open_volume, write_volume

    if axis not in _AXES:
        raise UserInputError(f"--axis must be z, y or x, got {axis!r}")
    if profile not in ("box", "gaussian"):
        raise UserInputError(f"--profile must be box or gaussian, got {profile!r}")
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    sectioning = AxialSectioning(factor, axis=_AXES[axis], profile=profile, fwhm=fwhm)  # type: ignore[arg-type]
    sections, info = sectioning.apply(volume.data)
    sections = _cast_like(np.asarray(sections), volume.dtype)
    voxel_size = list(volume.voxel_size)
    voxel_size[_AXES[axis]] *= factor
    out = write_volume(
        Volume(sections, voxel_size=tuple(voxel_size), source=volume.source),
        dst,
        overwrite=overwrite,
    )
    typer.echo(
        f"wrote {out}: {len(info.centres)} sections of {factor:g} slices along {axis}, "
        f"voxel size {tuple(voxel_size)} nm"
    )


def _cast_like(array, dtype):
    """Round and clip to an integer input dtype, so outputs keep the input's type."""
    import numpy as np

    if np.issubdtype(dtype, np.integer):
        limits = np.iinfo(dtype)
        return np.clip(np.rint(array), limits.min, limits.max).astype(dtype)
    return array.astype(np.float32)


SamplingSteps = Annotated[
    int | None,
    typer.Option(help="skelem: refiner network calls per plane (default 4; at most 4 truncated)."),
]
Samples = Annotated[
    int | None,
    typer.Option(help="skelem: samples averaged; > 1 also writes an uncertainty (std) map."),
]
SkeletonDir = Annotated[
    Path | None,
    typer.Option("--skeleton", help="skelem: reuse a trained skeleton (`train skeleton --out`)."),
]


@app.command()
def iso(
    src: Annotated[str, typer.Argument(help="Anisotropic input volume (thick sections along z).")],
    dst: Annotated[
        str, typer.Argument(help="Output: .zarr (any size, resumable) or .tif/.h5/.mrc (small).")
    ],
    factor: Factor,
    method: Annotated[
        str,
        typer.Option(help="Registered method: nearest, linear, cubic, lanczos, skeleton, skelem."),
    ] = "cubic",
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps for learned methods (skelem: its refiner's)."),
    ] = None,
    sampling_steps: SamplingSteps = None,
    samples: Samples = None,
    skeleton: SkeletonDir = None,
    config: Annotated[
        Path | None, typer.Option(help="YAML config of the method (learned methods).")
    ] = None,
    block: Annotated[
        tuple[int, int, int], typer.Option(help="Output block (z y x) = Zarr chunk.")
    ] = (64, 256, 256),
    scheduler: Annotated[
        str | None, typer.Option(help="dask.distributed scheduler address; default local threads.")
    ] = None,
    channel: Channel = None,
    overwrite: Overwrite = False,
) -> None:
    """Restore isotropic resolution along z, self-supervised from the volume itself.

    skelem also writes DST's siblings NAME_consistency (where the result
    disagrees with the observed sections) and, with --samples > 1, NAME_std
    (per-voxel standard deviation over the samples).

    Killed and run again, it resumes: training from the checkpoints in
    .NAME.run beside DST (removed when done), finished outputs are kept, and
    a .zarr output continues from its finished blocks.
    """
    from vemrestore.io import check_finite, open_volume

    restorer = configured_method(
        method,
        factor=factor,
        steps=steps,
        config=config,
        num_steps=sampling_steps,
        num_samples=samples,
        skeleton_path=skeleton,
    )
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    outputs = outputs_of(restorer, dst)
    record = {
        "command": "iso",
        "input": input_signature(src),
        "channel": channel,
        "config": restorer.config.model_dump(mode="json"),
        "skeleton": None if skeleton is None else file_signature(skeleton / "weights.pt"),
    }
    folder, pending = start_run(dst, list(outputs), record, overwrite=overwrite)
    if pending:
        fit_in_run(restorer, volume, folder)
        todo = {path: outputs[path] for path in pending}
        predict_outputs(
            restorer, volume, todo, block=block, scheduler=scheduler, overwrite=overwrite
        )
    finish_run(dst)


def _open_mask(path: str):
    """The mask's voxels (lazy where possible); its voxel size is not needed."""
    import warnings

    from vemrestore.io import open_volume

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gives no voxel size")
        return open_volume(path).data


train_app = typer.Typer(
    cls=UserErrorGroup, help="Train a learned method on a volume and save it.", no_args_is_help=True
)
app.add_typer(train_app, name="train")


TrainInput = Annotated[
    str, typer.Argument(help="Anisotropic input volume to learn from (self-supervised).")
]
ModelOut = Annotated[Path, typer.Option("--out", help="Model directory to write.")]
Resume = Annotated[bool, typer.Option(help="Continue from the checkpoints in --out.")]


def _train_and_save(name: str, src: str, out: Path, *, channel, resume: bool, **options) -> None:
    """Open ``src``, train method ``name`` configured by ``options``, save it to ``out``."""
    from vemrestore.io import check_finite, open_volume

    volume = open_volume(src, channel=channel)
    check_finite(volume)
    restorer = configured_method(name, **options)
    restorer.fit(volume, checkpoint_dir=out / "checkpoints", resume=resume)
    restorer.save(out)
    typer.echo(f"saved model to {out}")


@train_app.command("skeleton")
def train_skeleton(
    src: TrainInput,
    factor: Factor,
    out: ModelOut,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (SkeletonConfig).")] = None,
    resume: Resume = False,
    channel: Channel = None,
) -> None:
    """Train the skeleton network on the volume's own XY slices."""
    _train_and_save(
        "skeleton",
        src,
        out,
        channel=channel,
        resume=resume,
        factor=factor,
        steps=steps,
        config=config,
    )


@train_app.command("skelem")
def train_skelem(
    src: TrainInput,
    factor: Factor,
    out: ModelOut,
    skeleton: SkeletonDir = None,
    steps: Annotated[int | None, typer.Option(help="Refiner training steps.")] = None,
    sampling_steps: SamplingSteps = None,
    samples: Samples = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (SkelEMConfig).")] = None,
    resume: Resume = False,
    channel: Channel = None,
) -> None:
    """Train SkelEM: skeleton (or --skeleton), refiner, cycle fine-tuning on the volume."""
    if skeleton is not None and skeleton.resolve() == out.resolve():
        raise UserInputError(f"--out {out} is the --skeleton folder (write SkelEM elsewhere)")
    _train_and_save(
        "skelem",
        src,
        out,
        channel=channel,
        resume=resume,
        factor=factor,
        steps=steps,
        config=config,
        num_steps=sampling_steps,
        num_samples=samples,
        skeleton_path=skeleton,
    )


@train_app.command("lateral")
def train_lateral_command(
    hr: Annotated[str, typer.Option("--hr", help="High-resolution images (may be noisy).")],
    factor: Annotated[
        int, typer.Option("--factor", "-k", help="Lateral factor: 1 (denoise), 2, 3 or 4.")
    ],
    out: ModelOut,
    lr: Annotated[
        str | None, typer.Option("--lr", help="Real low-resolution images; synthetic if absent.")
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    resume: Resume = False,
) -> None:
    """Train lateral super-resolution + denoising without clean references."""
    from vemrestore.io import check_finite, open_volume
    from vemrestore.methods.lateral import train_lateral

    hr_volume = open_volume(hr)
    check_finite(hr_volume)
    lr_volume = None if lr is None else open_volume(lr)
    options = {} if steps is None else {"train": {"num_steps": steps}}
    train_lateral(
        hr_volume,
        lr=lr_volume,
        scale_factor=factor,
        out_dir=out,
        checkpoint_dir=out / "checkpoints",
        resume=resume,
        **options,
    )
    typer.echo(f"saved model to {out}")


@app.command()
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Directory written by `vemrestore train`.")],
    src: Annotated[str, typer.Argument(help="Input volume.")],
    dst: Annotated[str, typer.Argument(help="Output volume (.zarr for large outputs).")],
    block: Annotated[
        tuple[int, int, int], typer.Option(help="Output block (z y x) = Zarr chunk.")
    ] = (64, 256, 256),
    scheduler: Annotated[
        str | None, typer.Option(help="dask.distributed scheduler address.")
    ] = None,
    channel: Channel = None,
    overwrite: Overwrite = False,
) -> None:
    """Apply a trained model to a volume, blockwise (SkelEM also writes its maps, as iso)."""
    from vemrestore.io import check_finite, open_volume
    from vemrestore.methods import load_method

    restorer = load_method(model_dir)
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    outputs = outputs_of(restorer, dst)
    record = {
        "command": "predict",
        "model": file_signature(model_dir / "weights.pt"),
        "input": input_signature(src),
        "channel": channel,
    }
    _, pending = start_run(dst, list(outputs), record, overwrite=overwrite)
    todo = {path: outputs[path] for path in pending}
    predict_outputs(restorer, volume, todo, block=block, scheduler=scheduler, overwrite=overwrite)
    finish_run(dst)


@app.command()
def slices(
    src: Annotated[str, typer.Argument(help="Serial-section stack (Z, Y, X).")],
    dst: Annotated[
        str, typer.Argument(help="Output: .zarr (any size, resumable) or .tif/.h5/.mrc (small).")
    ],
    missing: Annotated[
        str | None,
        typer.Option(help="Sections to restore whole, 0-based: e.g. 3,17 or 10-12."),
    ] = None,
    mask: Annotated[
        str | None,
        typer.Option(help="Volume of the stack's shape, nonzero on damaged voxels to restore."),
    ] = None,
    detect: Annotated[
        bool,
        typer.Option(
            help="Also detect blank, outlying and locally damaged sections (reads the whole stack)."
        ),
    ] = False,
    method: Annotated[
        str, typer.Option(help="linear, flow (optical flow) or diffusion (trained on the stack).")
    ] = "diffusion",
    steps: Annotated[
        int | None, typer.Option(help="diffusion: training steps (time vs quality).")
    ] = None,
    model_dir: Annotated[
        Path | None,
        typer.Option(help="diffusion: load the model saved here, or save the one trained here."),
    ] = None,
    report: Annotated[
        Path | None, typer.Option(help="Write the report (restored sections, reasons) as JSON.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of training and sampling.")] = 0,
    block: Annotated[
        tuple[int, int, int], typer.Option(help="Output block (z y x) = Zarr chunk.")
    ] = (64, 256, 256),
    scheduler: Annotated[
        str | None, typer.Option(help="dask.distributed scheduler address; default local threads.")
    ] = None,
    channel: Channel = None,
    overwrite: Overwrite = False,
) -> None:
    """Restore missing and partially damaged sections from their neighbours.

    Voxels outside the damage are copied unchanged. NaN voxels are allowed
    only where they are restored (give them with --missing, --mask or --detect).
    Killed and run again, diffusion training resumes from .NAME.run beside
    DST, and a .zarr output from its finished blocks.
    """
    import time

    from vemrestore.io import atomic_output, open_volume
    from vemrestore.methods.slices import parse_indices, prepare_slices

    if report is not None:
        check_output_early(str(report), overwrite=overwrite)
    volume = open_volume(src, channel=channel)
    indices = None if missing is None else parse_indices(missing)
    damage_mask = None if mask is None else _open_mask(mask)
    record = {
        "command": "slices",
        "input": input_signature(src),
        "channel": channel,
        "missing": sorted(set(indices or [])),
        "mask": None if mask is None else input_signature(mask),
        "detect": detect,
        "method": method,
        "steps": steps,
        "seed": seed,
        "model_dir": None if model_dir is None else str(model_dir.resolve()),
    }
    folder, pending = start_run(dst, [dst], record, overwrite=overwrite)
    restorer, summary = prepare_slices(
        volume,
        missing=indices,
        mask=damage_mask,
        detect=detect,
        method=method,  # type: ignore[arg-type]
        model_dir=model_dir,
        train_steps=steps,
        seed=seed,
        checkpoint_dir=folder,
    )
    start = time.perf_counter()
    todo = dict.fromkeys(pending)  # the restoration only
    predict_outputs(restorer, volume, todo, block=block, scheduler=scheduler, overwrite=overwrite)
    summary.seconds = time.perf_counter() - start
    typer.echo(summary.format())
    if report is not None:
        with atomic_output(report, overwrite=overwrite) as partial:
            partial.write_text(summary.to_json())
    finish_run(dst)


@app.command(
    context_settings={
        "allow_extra_args": True,
        "ignore_unknown_options": True,
        "help_option_names": [],
    }
)
def bench(ctx: typer.Context) -> None:
    """Score methods on isotropic volumes: degrade, restore, compare (`bench --help`)."""
    from vemrestore.cli._bench import run_bench_command

    run_bench_command(ctx.args)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the outputs.")] = Path("vemrestore-demo"),
    factor: Annotated[
        float, typer.Option("--factor", "-k", help="Axial factor to simulate.")
    ] = 8.0,
    method: Annotated[str, typer.Option(help="Method to show beside the baselines.")] = "cubic",
    steps: Annotated[
        int | None, typer.Option(help="Training steps for a learned --method.")
    ] = None,
) -> None:
    """Degrade a real EM cube along z, restore it, write the result, an orthoview and metrics."""
    from vemrestore.cli._demo import run_demo

    run_demo(out, factor=factor, method=method, steps=steps)


def main() -> None:
    """Console-script entry point."""
    app()
