"""The typer application and its commands."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Annotated

import typer

from vemrestore.cli._errors import UserErrorGroup, show_warning
from vemrestore.cli._export import export
from vemrestore.cli._options import (
    BlockShape,
    ShapeCommand,
    VoxelSize,
    parse_block,
    parse_voxel_size,
)
from vemrestore.cli._report import report
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
AxialFactor = Annotated[
    float | None,
    typer.Option(
        "--factor",
        "-k",
        help="Axial factor k (> 1), e.g. 8 for 80 nm sections at 10 nm voxels; default: the "
        "input's z / x voxel size (a factor more than 10 % away from it needs --force).",
    ),
]
Force = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Keep a --factor that disagrees with the voxel sizes (output z voxel size: z / k).",
    ),
]
Voxels = Annotated[
    VoxelSize | None,
    typer.Option(
        "--voxel-size",
        parser=parse_voxel_size,
        metavar="Z,Y,X",
        help="Voxel size in nm, used instead of the file's (e.g. 80,10,10).",
    ),
]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Replace an existing output.")]
Channel = Annotated[
    int | None, typer.Option("--channel", help="Channel to use from a multi-channel file.")
]


def _print_version(value: bool) -> None:
    if value:
        from vemrestore import __version__

        typer.echo(f"vemrestore {__version__}")
        raise typer.Exit()


@app.callback()
def _configure(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log details.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", is_eager=True, callback=_print_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    warnings.showwarning = show_warning  # one line `warning: ...`, no source line
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    # What the facade and the bench say to the user (resuming, keeping outputs, progress):
    # plain lines on stderr.
    for name in ("vemrestore.api", "vemrestore.bench"):
        facade = logging.getLogger(name)
        if not facade.handlers:
            handler = logging.StreamHandler()
            handler.setFormatter(logging.Formatter("%(message)s"))
            facade.addHandler(handler)
        facade.setLevel(logging.INFO)
        facade.propagate = False


@app.command()
def info(
    path: Annotated[str, typer.Argument(help="Volume: .tif, .h5:/dataset, .zarr, .mrc")],
    channel: Channel = None,
    voxel_size: Voxels = None,
) -> None:
    """Print shape, size, dtype, voxel size, position, axial factor and format of a volume."""
    from vemrestore.io import describe_volume, open_volume

    description = describe_volume(open_volume(path, channel=channel, voxel_size=voxel_size))
    for key, value in description.items():
        text = _INFO_FORMATS.get(key, str)(value)
        if text:
            typer.echo(f"{key}: {text}")


def _axial_factor_text(factor: float | None) -> str:
    if factor is None:
        return "unknown (no voxel size along z or x: pass --factor or --voxel-size Z,Y,X)"
    if factor <= 1:
        return f"{factor:g} (z is not coarser than x: nothing to restore along z)"
    return f"{factor:g} (z / x voxel size: iso and train use it when --factor is not given)"


_INFO_FORMATS = {
    "voxel_size": lambda v: f"{v} nm",
    "translation": lambda v: f"{v} nm (position of voxel (0, 0, 0))",
    "voxel_size_unknown": lambda v: (
        f"{', '.join(v)} (not in the file, or 1 nm: pass --voxel-size Z,Y,X)" if v else ""
    ),
    "axial_factor": _axial_factor_text,
}


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
    voxel_size: Voxels = None,
    pyramid: Pyramid = True,
    zarr_format: ZarrFormat = 3,
    overwrite: Overwrite = False,
) -> None:
    """Simulate thick sections: the forward model used to make test data.

    The sections keep the input's place in space: each one is centred where
    the fine slices it averages are.
    """
    import numpy as np

    from vemrestore.degrade import AxialSectioning
    from vemrestore.io import Volume, check_finite, open_volume, write_volume

    if axis not in _AXES:
        raise UserInputError(f"--axis must be z, y or x, got {axis!r}")
    if profile not in ("box", "gaussian"):
        raise UserInputError(f"--profile must be box or gaussian, got {profile!r}")
    volume = open_volume(src, channel=channel, voxel_size=voxel_size)
    check_finite(volume)
    sectioning = AxialSectioning(factor, axis=_AXES[axis], profile=profile, fwhm=fwhm)  # type: ignore[arg-type]
    _check_sections(volume.shape[_AXES[axis]], factor, axis)
    sections, info = sectioning.apply(volume.data)
    sections = _cast_like(np.asarray(sections), volume.dtype)
    sizes, translation = list(volume.voxel_size), list(volume.translation)
    translation[_AXES[axis]] += float(info.centres[0]) * sizes[_AXES[axis]]  # section 0's centre
    sizes[_AXES[axis]] *= factor
    out = write_volume(
        Volume(
            sections,
            voxel_size=tuple(sizes),  # type: ignore[arg-type]
            translation=tuple(translation),  # type: ignore[arg-type]
            source=volume.source,
        ),
        dst,
        overwrite=overwrite,
        pyramid=pyramid,
        zarr_format=zarr_format,
    )
    typer.echo(
        f"wrote {out}: {len(info.centres)} sections of {factor:g} slices along {axis}, "
        f"voxel size {tuple(sizes)} nm"
    )


def _check_sections(length: int, factor: float, axis: str) -> None:
    """Refuse a factor that leaves fewer than 2 sections (not a volume that reads back as 3D)."""
    from vemrestore.degrade import AxialGrid

    count = AxialGrid(factor).num_sections(length)
    if count >= 2:
        return
    fix = (
        f"use --factor {length / 2:g} or smaller"
        if length > 2
        else f"the input needs at least 3 slices along {axis}"
    )
    raise UserInputError(
        f"--factor {factor:g} leaves {count} section(s) of the {length} {axis} slices; "
        f"at least 2 are needed ({fix})"
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
    typer.Option(
        help="skelem: refiner network calls per plane (default 4; at most 4 truncated). "
        "d2r: calls of the diffusion teacher per plane in stage II (default 4)."
    ),
]
Samples = Annotated[
    int | None,
    typer.Option(
        help="skelem: samples averaged; > 1 also writes an uncertainty (std) map. "
        "d2r: samples the diffusion teacher averages in stage II."
    ),
]
SkeletonDir = Annotated[
    Path | None,
    typer.Option("--skeleton", help="skelem: reuse a trained skeleton (`train skeleton --out`)."),
]
FromScratch = Annotated[
    bool,
    typer.Option(
        "--from-scratch",
        help="Train from random weights instead of fine-tuning the shipped prior, with the "
        "method's own (longer) default training budget.",
    ),
]
Block = Annotated[
    BlockShape,
    typer.Option(
        parser=parse_block,
        metavar="Z,Y,X",
        help="Output block = Zarr chunk, e.g. 64,128,128 (also as three words: 64 128 128).",
    ),
]
DEFAULT_BLOCK = "64,256,256"
Scheduler = Annotated[
    str | None, typer.Option(help="dask.distributed scheduler address; default local threads.")
]
Pyramid = Annotated[
    bool, typer.Option(help="OME-Zarr outputs: add multiscale levels down to ~64 voxels.")
]
ZarrFormat = Annotated[
    int,
    typer.Option(help="OME-Zarr outputs: 3 (OME-NGFF 0.5) or 2 (OME-NGFF 0.4, for Fiji n5-ij)."),
]


def _report_written(written: dict[str, Path]) -> None:
    """One line per output written: path, what it holds, shape and voxel size."""
    from vemrestore.io import open_volume

    for name, path in written.items():
        result = open_volume(path)
        tag = "" if name == "restored" else f" ({name})"
        typer.echo(
            f"wrote {path}{tag}: shape {result.shape}, voxel size {result.voxel_size} nm, "
            f"at {result.translation} nm"
        )


def _output_options(
    block, scheduler, pyramid, zarr_format, channel, overwrite, voxel_size
) -> dict[str, object]:
    """The input and output options that ``api.iso``, ``predict`` and ``slices`` share."""
    return {
        "block_shape": block,
        "scheduler": scheduler,
        "pyramid": pyramid,
        "zarr_format": zarr_format,
        "channel": channel,
        "overwrite": overwrite,
        "voxel_size": voxel_size,
    }


@app.command(cls=ShapeCommand)
def iso(
    src: Annotated[str, typer.Argument(help="Anisotropic input volume (thick sections along z).")],
    dst: Annotated[
        str, typer.Argument(help="Output: .zarr (any size, resumable) or .tif/.h5/.mrc (small).")
    ],
    factor: AxialFactor = None,
    method: Annotated[
        str,
        typer.Option(
            help="Axial method: nearest, linear, cubic, lanczos, skeleton, skelem, "
            "diffusion2d, d2r."
        ),
    ] = "cubic",
    steps: Annotated[
        int | None,
        typer.Option(
            help="Training steps for learned methods. skelem splits them across its stages: "
            "skeleton 50%, refiner 40%, cycle 10% (with --skeleton, which is not "
            "retrained: refiner 80%, cycle 20%), at least 1 step each; d2r: teacher 60%, "
            "3D network 40%."
        ),
    ] = None,
    sampling_steps: SamplingSteps = None,
    samples: Samples = None,
    skeleton: SkeletonDir = None,
    from_scratch: FromScratch = False,
    config: Annotated[
        Path | None, typer.Option(help="YAML config of the method (learned methods).")
    ] = None,
    block: Block = DEFAULT_BLOCK,  # type: ignore[assignment]
    scheduler: Scheduler = None,
    pyramid: Pyramid = True,
    zarr_format: ZarrFormat = 3,
    channel: Channel = None,
    voxel_size: Voxels = None,
    force: Force = False,
    overwrite: Overwrite = False,
) -> None:
    """Restore isotropic resolution along z, self-supervised from the volume itself.

    The factor is the input's z / x voxel size unless --factor gives it; the
    output overlays the input in space (its translation says where).

    The skeleton method, and SkelEM's skeleton and refiner, start from the
    priors shipped with vemrestore and fine-tune them on the input for a few
    minutes (held-out sections stop them once they no longer improve);
    --from-scratch trains from random weights.

    Methods with several outputs write them in one pass: skelem writes DST's
    siblings NAME_consistency (where the result disagrees with the observed
    sections) and, with --samples > 1, NAME_std (per-voxel standard deviation
    over the samples).

    Killed and run again, it resumes: training from the checkpoints in
    .NAME.run beside DST (removed when done), finished outputs are kept, and
    a .zarr output continues from its finished blocks.
    """
    from vemrestore import api

    written = api.iso(
        src,
        dst,
        factor=factor,
        method=method,
        steps=steps,
        inference={"num_inference_steps": sampling_steps, "num_samples": samples},
        config=config,
        **_output_options(block, scheduler, pyramid, zarr_format, channel, overwrite, voxel_size),
        force=force,
        skeleton_path=skeleton,
        from_scratch=from_scratch or None,
    )
    _report_written(written)


train_app = typer.Typer(
    cls=UserErrorGroup, help="Train a learned method on a volume and save it.", no_args_is_help=True
)
app.add_typer(train_app, name="train")


TrainInput = Annotated[
    str, typer.Argument(help="Anisotropic input volume to learn from (self-supervised).")
]
ModelOut = Annotated[Path, typer.Option("--out", help="Model directory to write.")]
Resume = Annotated[
    bool,
    typer.Option(
        help="Continue from the checkpoints in --out (with --overwrite: of the replacement)."
    ),
]
ModelOverwrite = Annotated[
    bool,
    typer.Option("--overwrite", help="Replace an existing --out, once the new model is complete."),
]


def _train_and_save(name: str, src: str, out: Path, *common, **options) -> None:
    """Train method ``name`` on ``src`` and save it to ``out``.

    ``common`` is (factor, steps, config, resume, overwrite, channel,
    voxel_size, force); ``options`` are method options (``api.train``'s keywords).
    """
    from vemrestore import api

    factor, steps, config, resume, overwrite, channel, voxel_size, force = common
    api.train(
        name,
        src,
        out,
        factor=factor,
        steps=steps,
        config=config,
        resume=resume,
        overwrite=overwrite,
        channel=channel,
        voxel_size=voxel_size,
        force=force,
        **options,
    )
    typer.echo(f"saved model to {out}")


@train_app.command("skeleton")
def train_skeleton(
    src: TrainInput,
    out: ModelOut,
    factor: AxialFactor = None,
    steps: Annotated[int | None, typer.Option(help="Training steps.")] = None,
    from_scratch: FromScratch = False,
    config: Annotated[Path | None, typer.Option(help="YAML config (SkeletonConfig).")] = None,
    resume: Resume = False,
    overwrite: ModelOverwrite = False,
    channel: Channel = None,
    voxel_size: Voxels = None,
    force: Force = False,
) -> None:
    """Fine-tune the shipped skeleton prior on the volume's own XY slices (or --from-scratch)."""
    common = (factor, steps, config, resume, overwrite, channel, voxel_size, force)
    _train_and_save("skeleton", src, out, *common, from_scratch=from_scratch or None)


@train_app.command("skelem")
def train_skelem(
    src: TrainInput,
    out: ModelOut,
    factor: AxialFactor = None,
    skeleton: SkeletonDir = None,
    steps: Annotated[
        int | None,
        typer.Option(
            help="Training steps of all stages together: skeleton 50%, refiner 40%, "
            "cycle 10% (with --skeleton, which is not retrained: refiner 80%, cycle 20%), "
            "at least 1 step each."
        ),
    ] = None,
    sampling_steps: SamplingSteps = None,
    samples: Samples = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (SkelEMConfig).")] = None,
    from_scratch: FromScratch = False,
    resume: Resume = False,
    overwrite: ModelOverwrite = False,
    channel: Channel = None,
    voxel_size: Voxels = None,
    force: Force = False,
) -> None:
    """Train SkelEM: skeleton (or --skeleton), refiner, cycle fine-tuning on the volume.

    The skeleton stage fine-tunes the shipped skeleton prior, unless --skeleton
    gives a trained one; the refiner fine-tunes the shipped refiner prior
    (--from-scratch: both start from random weights).
    """
    if skeleton is not None and skeleton.resolve() == out.resolve():
        raise UserInputError(f"--out {out} is the --skeleton folder (write SkelEM elsewhere)")
    _train_and_save(
        "skelem",
        src,
        out,
        *(factor, steps, config, resume, overwrite, channel, voxel_size, force),
        inference={"num_inference_steps": sampling_steps, "num_samples": samples},
        skeleton_path=skeleton,
        from_scratch=from_scratch or None,
    )


@train_app.command("d2r")
def train_d2r(
    src: TrainInput,
    out: ModelOut,
    factor: AxialFactor = None,
    teacher: Annotated[
        str | None,
        typer.Option(
            help="What restores the XZ/YZ planes in stage II: diffusion (D2R, the default), "
            "skeleton or skelem."
        ),
    ] = None,
    steps: Annotated[
        int | None,
        typer.Option(help="Training steps in all: teacher 60%, 3D network 40%."),
    ] = None,
    sampling_steps: SamplingSteps = None,
    samples: Samples = None,
    keep_recovered: Annotated[
        Path | None,
        typer.Option(
            help="Folder to keep the stage II volumes in (xz.zarr, yz.zarr); default: "
            "they are removed once the 3D network is trained."
        ),
    ] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config (D2RConfig).")] = None,
    resume: Resume = False,
    overwrite: ModelOverwrite = False,
    channel: Channel = None,
    voxel_size: Voxels = None,
    force: Force = False,
) -> None:
    """Train D2R: a plane teacher (stage I), its XZ/YZ volumes (II), the 3D network (III).

    Only the 3D network is saved; `predict` and `iso --method d2r` run it
    alone. Killed and run again with --resume, it continues at its stage.
    """
    _train_and_save(
        "d2r",
        src,
        out,
        *(factor, steps, config, resume, overwrite, channel, voxel_size, force),
        inference={"num_inference_steps": sampling_steps, "num_samples": samples},
        teacher=teacher,
        recovered_dir=keep_recovered,
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
    overwrite: ModelOverwrite = False,
    voxel_size: Annotated[
        VoxelSize | None,
        typer.Option(
            "--voxel-size",
            parser=parse_voxel_size,
            metavar="Z,Y,X",
            help="Voxel size of --hr in nm, used instead of its file's (e.g. 30,4,4).",
        ),
    ] = None,
) -> None:
    """Train lateral super-resolution + denoising without clean references."""
    from vemrestore.api import train_lateral
    from vemrestore.api._commands import model_output
    from vemrestore.io import check_finite, open_volume, refuse_outputs_over_inputs

    refuse_outputs_over_inputs({"--out": out}, {"--hr": hr, "--lr": lr})
    target = model_output(out, resume=resume, overwrite=overwrite)
    hr_volume = open_volume(hr, voxel_size=voxel_size)
    lr_volume = None if lr is None else open_volume(lr)
    for volume in (hr_volume, lr_volume):
        if volume is not None:
            check_finite(volume)
    options = {} if steps is None else {"train": {"num_steps": steps}}
    with target as folder:
        train_lateral(
            hr_volume,
            lr=lr_volume,
            scale_factor=factor,
            out_dir=folder,
            checkpoint_dir=folder / "checkpoints",
            resume=resume,
            **options,
        )
    typer.echo(f"saved model to {out}")


@app.command(cls=ShapeCommand)
def predict(
    model_dir: Annotated[Path, typer.Argument(help="Directory written by `vemrestore train`.")],
    src: Annotated[str, typer.Argument(help="Input volume.")],
    dst: Annotated[str, typer.Argument(help="Output volume (.zarr for large outputs).")],
    block: Block = DEFAULT_BLOCK,  # type: ignore[assignment]
    scheduler: Scheduler = None,
    pyramid: Pyramid = True,
    zarr_format: ZarrFormat = 3,
    channel: Channel = None,
    voxel_size: Voxels = None,
    overwrite: Overwrite = False,
) -> None:
    """Apply a trained model to a volume, blockwise (SkelEM also writes its maps, as iso)."""
    from vemrestore import api

    written = api.predict(
        model_dir,
        src,
        dst,
        **_output_options(block, scheduler, pyramid, zarr_format, channel, overwrite, voxel_size),
    )
    _report_written(written)


@app.command(cls=ShapeCommand)
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
        str,
        typer.Option(
            help="linear, flow (optical flow) or diffusion (prior fine-tuned on the stack)."
        ),
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
    from_scratch: FromScratch = False,
    block: Block = DEFAULT_BLOCK,  # type: ignore[assignment]
    scheduler: Scheduler = None,
    pyramid: Pyramid = True,
    zarr_format: ZarrFormat = 3,
    channel: Channel = None,
    voxel_size: Voxels = None,
    overwrite: Overwrite = False,
) -> None:
    """Restore missing and partially damaged sections from their neighbours.

    Voxels outside the damage are copied unchanged. NaN voxels are allowed
    only where they are restored (give them with --missing, --mask or --detect).
    The diffusion method fine-tunes the shipped prior on the stack's own
    sections (--from-scratch: random weights). Killed and run again, its
    training resumes from .NAME.run beside DST, and a .zarr output from its
    finished blocks.
    """
    from vemrestore import api
    from vemrestore.methods.slices import parse_indices

    summary = api.slices(
        src,
        dst,
        missing=None if missing is None else parse_indices(missing),
        mask=mask,
        detect=detect,
        method=method,
        steps=steps,
        model_dir=model_dir,
        report=report,
        seed=seed,
        from_scratch=from_scratch,
        **_output_options(block, scheduler, pyramid, zarr_format, channel, overwrite, voxel_size),
    )
    typer.echo(summary.format())


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
    method: Annotated[
        str,
        typer.Option(
            help="Method to show beside the baselines (default: the skeleton, its shipped "
            "prior fine-tuned on the degraded cube)."
        ),
    ] = "skeleton",
    steps: Annotated[
        int | None,
        typer.Option(
            help="Training steps for a learned --method (skelem: split across its stages, "
            "as iso --steps; skeleton: 300 fine-tune steps of its prior by default)."
        ),
    ] = None,
) -> None:
    """Degrade a real EM cube along z, restore it, write the result, an orthoview and metrics."""
    from vemrestore.cli._demo import run_demo

    run_demo(out, factor=factor, method=method, steps=steps)


app.command()(export)
app.command()(report)


def main() -> None:
    """Console-script entry point."""
    app()
