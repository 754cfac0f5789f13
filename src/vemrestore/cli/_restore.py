"""Shared steps of the restoring commands: configure, check outputs, train, write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from vemrestore.errors import UserInputError

__all__ = [
    "check_output_early",
    "configured_method",
    "file_signature",
    "finish_run",
    "fit_in_run",
    "input_signature",
    "output_dtype",
    "outputs_of",
    "predict_outputs",
    "sibling_path",
    "start_run",
]


def outputs_of(restorer, dst: str) -> dict[str, str | None]:
    """Output path -> what it holds: None (the restoration) or a SkelEM map.

    SkelEM writes its mean to ``dst``, its data-consistency residual beside it
    and, with more than one sample, the per-voxel standard deviation.
    """
    if restorer.config.method != "skelem":
        return {dst: None}
    outputs: dict[str, str | None] = {dst: "mean"}
    outputs[sibling_path(dst, "consistency")] = "consistency_residual"
    if restorer.config.num_samples > 1:
        outputs[sibling_path(dst, "std")] = "std"
    return outputs


def predict_outputs(restorer, volume, outputs: dict[str, str | None], **engine) -> None:
    """Run the engine once per output; the restoration keeps an integer input dtype."""
    from vemrestore.engine import predict_volume

    block = engine.pop("block")
    for path, output in outputs.items():
        variant = restorer if output is None else restorer.with_output(output)
        restoration = output in (None, "mean")
        dtype = output_dtype(volume.dtype) if restoration else "float32"
        out = predict_volume(variant, volume, path, block_shape=block, output_dtype=dtype, **engine)
        typer.echo(
            f"wrote {out}{'' if restoration else f' ({output})'}: shape "
            f"{restorer.output_shape(volume.shape)}, voxel size "
            f"{restorer.output_voxel_size(volume.voxel_size)} nm"
        )


def sibling_path(dst: str, tag: str) -> str:
    """``DIR/NAME_tag.SUFFIX`` beside ``DIR/NAME.SUFFIX`` (an HDF5 dataset path is kept)."""
    from vemrestore.io import split_dataset_path

    path, inner = split_dataset_path(dst)
    stem, suffix = path.stem, path.suffix
    if stem.endswith(".ome"):  # out.ome.zarr -> out_tag.ome.zarr
        stem, suffix = stem[: -len(".ome")], ".ome" + suffix
    sibling = str(path.with_name(f"{stem}_{tag}{suffix}"))
    return sibling if inner is None else f"{sibling}:{inner}"


def check_output_early(dst: str, *, overwrite: bool) -> None:
    """Refuse an existing output before any training (a Zarr partial still resumes)."""
    from vemrestore.io import check_output_path, split_dataset_path

    check_output_path(split_dataset_path(dst)[0], overwrite=overwrite)


def output_dtype(dtype) -> str:
    import numpy as np

    return np.dtype(dtype).name if np.issubdtype(dtype, np.integer) else "float32"


def configured_method(
    name: str,
    *,
    factor: float,
    steps: int | None,
    config: Path | None,
    **overrides: object,
):
    """Method ``name`` from its YAML config (if given) with CLI overrides, validated together.

    ``overrides`` are top-level config fields; None means not given. A field
    the method lacks is refused with the option that set it.
    """
    from vemrestore.methods import get_method, load_config_options, method_config_class

    config_cls = method_config_class(name)
    if config is not None:
        options = load_config_options(config)
        if options["method"] != name:
            raise UserInputError(
                f"config {config} is for method {options['method']!r}, not {name!r} (fix 'method:')"
            )
    else:
        options = {"method": name}
    options["scale_factor"] = factor
    given = {key: value for key, value in overrides.items() if value is not None}
    if steps is not None:
        given["train"] = {**options.get("train", {}), "num_steps": steps}
    for key, value in given.items():
        if key not in config_cls.model_fields:
            option = "--steps" if key == "train" else OVERRIDE_OPTIONS.get(key, key)
            raise UserInputError(f"{option} does not apply to method {name!r}")
        options[key] = value
    if "skeleton_path" in given:
        options.pop("skeleton", None)  # a given skeleton replaces the one to train
    return get_method(name)(config_cls.model_validate(options))


# CLI option that sets each config field given to ``configured_method``.
OVERRIDE_OPTIONS = {
    "num_steps": "--sampling-steps",
    "num_samples": "--samples",
    "skeleton_path": "--skeleton",
}


def run_dir(dst: str) -> Path:
    """Where a command keeps the state of an unfinished run: ``.NAME.run`` beside the output."""
    from vemrestore.io import split_dataset_path

    path = split_dataset_path(dst)[0]
    return path.with_name(f".{path.name}.run")


def file_signature(path: str | Path | None) -> list | None:
    """Absolute path, size and modification time: tells an edited file apart."""
    if path is None:
        return None
    path = Path(path)
    stat = path.stat() if path.exists() else None
    return [str(path.resolve()), stat and stat.st_size, stat and stat.st_mtime_ns]


def input_signature(src: str) -> list:
    """``file_signature`` of an input, with its inner dataset path (``f.h5:/ds``)."""
    from vemrestore.io import split_dataset_path

    path, inner = split_dataset_path(src)
    return [*file_signature(path), inner]  # type: ignore[misc]


def start_run(
    dst: str, outputs: list[str], record: dict, *, overwrite: bool
) -> tuple[Path, list[str]]:
    """Open the run folder of ``dst`` and say which ``outputs`` are still to write.

    The folder (training checkpoints, the run's ``record``) lets a killed
    command resume: run again with the same ``record``, it continues the
    training from the checkpoints and keeps the outputs already finished.
    A folder left by another run is refused, unless that run made no
    progress (no checkpoint, no output: a failed start), which is replaced.
    ``overwrite`` starts afresh. ``finish_run`` removes the folder.

    Returns
    -------
    folder : pathlib.Path
    pending : list of str
        The outputs not yet written, each checked to be writable.
    """
    from vemrestore.io import atomic_output, split_dataset_path

    folder = run_dir(dst)
    record = json.loads(json.dumps(record))  # compare as stored: tuples become lists
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    finished = [p for p in outputs if split_dataset_path(p)[0].exists()]
    resuming = folder.exists() and _saved_record(folder) == record
    if folder.exists() and not resuming:
        if any(folder.rglob("*.pt")) or finished:
            raise UserInputError(
                f"{folder} holds an unfinished run with other settings or input "
                "(run that command again to finish it, or pass --overwrite to start afresh)"
            )
        shutil.rmtree(folder)  # a start that failed before any progress
    pending = []
    for path in outputs:
        if resuming and path in finished:
            typer.echo(f"keeping {path}, finished by the interrupted run", err=True)
            continue
        check_output_early(path, overwrite=overwrite)
        pending.append(path)
    if resuming:
        typer.echo(f"resuming the run in {folder}", err=True)
    else:
        folder.mkdir()
        with atomic_output(folder / "run.json") as partial:
            partial.write_text(json.dumps(record, indent=2))
    return folder, pending


def _saved_record(folder: Path) -> object:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None


def fit_in_run(restorer, volume, folder: Path) -> None:
    """Fit ``restorer``; a learned one checkpoints in the run ``folder`` and resumes from it."""
    if hasattr(restorer.config, "train"):
        restorer.fit(volume, checkpoint_dir=folder, resume=True)
    else:
        restorer.fit(volume)


def finish_run(dst: str) -> None:
    """Remove the run folder of a completed command."""
    shutil.rmtree(run_dir(dst), ignore_errors=True)
