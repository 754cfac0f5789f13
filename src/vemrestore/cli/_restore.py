"""Shared steps of the restoring commands: configure, check outputs, train, write."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import typer

from vemrestore.errors import UserInputError

__all__ = [
    "check_output_early",
    "checkpoint_folder",
    "configured_method",
    "finish_training",
    "fit_resumable",
    "output_dtype",
    "outputs_of",
    "predict_outputs",
    "sibling_path",
]


def outputs_of(restorer, dst: str, *, overwrite: bool) -> dict[str, str | None]:
    """Output path -> what it holds (None: the restoration; else a SkelEM map), all checked.

    SkelEM writes its data-consistency residual beside ``dst`` and, with more
    than one sample, the per-voxel standard deviation.
    """
    outputs: dict[str, str | None] = {dst: None}
    if restorer.config.method == "skelem":
        outputs[sibling_path(dst, "consistency")] = "consistency_residual"
        if restorer.config.num_samples > 1:
            outputs[sibling_path(dst, "std")] = "std"
    for path in outputs:
        check_output_early(path, overwrite=overwrite)
    return outputs


def predict_outputs(restorer, volume, outputs: dict[str, str | None], **engine) -> None:
    """Run the engine once per output; the restoration keeps an integer input dtype."""
    from vemrestore.engine import predict_volume

    block = engine.pop("block")
    for path, output in outputs.items():
        variant = restorer if output is None else restorer.with_output(output)
        dtype = output_dtype(volume.dtype) if output is None else "float32"
        out = predict_volume(variant, volume, path, block_shape=block, output_dtype=dtype, **engine)
        typer.echo(
            f"wrote {out}{'' if output is None else f' ({output})'}: shape "
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


def training_dir(dst: str) -> Path:
    """Where a command keeps its training checkpoints: ``.NAME.train`` beside the output."""
    from vemrestore.io import split_dataset_path

    path = split_dataset_path(dst)[0]
    return path.with_name(f".{path.name}.train")


def checkpoint_folder(dst: str, run: dict, *, overwrite: bool) -> Path:
    """The training checkpoint folder of ``dst`` for the run described by ``run``.

    A new folder records ``run`` (JSON-ready); an existing one is reused only
    if it records the same run, so a killed command resumes its training but
    never continues another's. ``overwrite`` starts afresh.
    """
    folder = training_dir(dst)
    record = folder / "run.json"
    run = json.loads(json.dumps(run))  # compare as stored: tuples become lists
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    if folder.exists():
        try:
            saved = json.loads(record.read_text())
        except (OSError, ValueError):
            saved = None
        if saved != run:
            raise UserInputError(
                f"{folder} holds the training of a run with other settings or input "
                "(pass --overwrite to start again, or delete it)"
            )
        typer.echo(f"resuming training from {folder}", err=True)
    else:
        folder.mkdir()
        record.write_text(json.dumps(run, indent=2))
    return folder


def fit_resumable(restorer, volume, dst: str, *, overwrite: bool) -> None:
    """Fit ``restorer``; a learned one checkpoints beside ``dst`` so a killed run resumes."""
    if not hasattr(restorer.config, "train"):
        restorer.fit(volume)
        return
    run = {
        "config": restorer.config.model_dump(mode="json"),
        "input": volume.source,
        "input_shape": list(volume.shape),
    }
    folder = checkpoint_folder(dst, run, overwrite=overwrite)
    restorer.fit(volume, checkpoint_dir=folder, resume=True)


def finish_training(dst: str) -> None:
    """Remove the training checkpoints of a completed run."""
    shutil.rmtree(training_dir(dst), ignore_errors=True)
