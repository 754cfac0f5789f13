"""One function per command: open -> method -> engine -> write, with a run record.

The CLI, the demo and the napari widgets call these; they hold no method
logic (methods are built by name through the registry, their outputs named
by the method itself).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.api._configure import configure
from vemrestore.api._run import (
    check_output_early,
    file_signature,
    finish_run,
    input_signature,
    output_paths,
    run_lock,
    start_run,
)
from vemrestore.api._slices import prepare_slices
from vemrestore.engine import DEFAULT_BLOCK_SHAPE, predict_volume
from vemrestore.errors import UserInputError
from vemrestore.io import atomic_output, check_finite, open_volume
from vemrestore.io._atomic import partial_path
from vemrestore.io._paths import refuse_outputs_over_inputs
from vemrestore.methods import RESTORED, Method, load_method

__all__ = ["iso", "model_output", "predict", "slices", "train"]


def _restoration_dtype(dtype: np.dtype) -> str:
    """The restoration keeps an integer input dtype; everything else is float32."""
    return np.dtype(dtype).name if np.issubdtype(dtype, np.integer) else "float32"


def _write_outputs(
    method: Method, volume: Any, todo: dict[str, str], engine: dict[str, Any]
) -> None:
    """One engine pass writing the pending outputs (name -> path) of ``method``.

    The restoration keeps an integer input dtype; the other outputs are float32.
    """
    if not todo:
        return
    extra = {name: path for name, path in todo.items() if name != RESTORED}
    predict_volume(
        method,
        volume,
        todo.get(RESTORED),
        extra_outputs=extra,
        output_dtype=_restoration_dtype(volume.dtype),
        **engine,
    )


def iso(
    src: str,
    dst: str,
    *,
    factor: float,
    method: str = "cubic",
    steps: int | None = None,
    inference: dict[str, Any] | None = None,
    config: Path | None = None,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | None = None,
    channel: int | None = None,
    overwrite: bool = False,
    **options: Any,
) -> dict[str, Path]:
    """Restore isotropic resolution along z of the volume at ``src`` into ``dst``.

    Every output of the method is written in one engine pass: the restoration
    at ``dst``, the others (e.g. SkelEM's ``consistency`` and ``std``) beside
    it as ``NAME_<output>.SUFFIX``. Killed and called again with the same
    arguments, it resumes (training from the checkpoints in ``.NAME.run``,
    finished outputs kept, a ``.zarr`` from its finished blocks).

    Parameters
    ----------
    src, dst : str
        Input volume and output path (``.zarr`` for any size, resumable;
        ``.tif``/``.h5``/``.mrc`` assembled in memory).
    factor : float
        Axial factor (section thickness in output voxels).
    method : str
        An axial method (``axial_methods()``).
    steps, inference, config, **options
        As in ``configure``.
    block_shape, scheduler
        Engine options (output block = Zarr chunk; dask scheduler address).
    channel : int, optional
        Channel of a multi-channel input.
    overwrite : bool
        Replace existing outputs and discard an unfinished run.

    Returns
    -------
    dict of str to pathlib.Path
        Output name -> path written (outputs kept from an interrupted run included).
    """
    restorer = configure(
        method, factor=factor, config=config, steps=steps, inference=inference, **options
    )
    skeleton = options.get("skeleton_path")
    _refuse_over_inputs(restorer, dst, {"input": src, "--config": config, "--skeleton": skeleton})
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    record = {
        "command": "iso",
        "input": input_signature(volume),
        "channel": channel,
        "config": restorer.config.model_dump(mode="json"),
        "skeleton": None if skeleton is None else file_signature(Path(skeleton) / "weights.pt"),
    }
    return _run(restorer, volume, dst, record, overwrite, block_shape, scheduler, fit=True)


def predict(
    model_dir: Path,
    src: str,
    dst: str,
    *,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | None = None,
    channel: int | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Apply a saved model to the volume at ``src``; outputs as in ``iso``."""
    restorer = load_method(model_dir)
    _refuse_over_inputs(restorer, dst, {"model folder": model_dir, "input": src})
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    record = {
        "command": "predict",
        "model": file_signature(Path(model_dir) / "weights.pt"),
        "input": input_signature(volume),
        "channel": channel,
    }
    return _run(restorer, volume, dst, record, overwrite, block_shape, scheduler, fit=False)


def _refuse_over_inputs(restorer: Method, dst: str, inputs: Mapping[str, Any]) -> None:
    """Refuse outputs of ``restorer`` at ``dst`` (and beside it) that are one of ``inputs``."""
    outputs = output_paths(restorer.outputs, dst)
    labels = {name: "output" if name == RESTORED else f"{name} output" for name in outputs}
    refuse_outputs_over_inputs({labels[name]: path for name, path in outputs.items()}, inputs)


def _run(
    restorer: Method,
    volume: Any,
    dst: str,
    record: dict[str, Any],
    overwrite: bool,
    block_shape: tuple[int, int, int],
    scheduler: str | None,
    *,
    fit: bool,
) -> dict[str, Path]:
    paths = output_paths(restorer.outputs, dst)
    with run_lock(dst):
        folder, pending = start_run(dst, list(paths.values()), record, overwrite=overwrite)
        todo = {name: path for name, path in paths.items() if path in pending}
        if todo and fit:
            if hasattr(restorer.config, "train"):
                restorer.fit(volume, checkpoint_dir=folder, resume=True)  # type: ignore[call-arg]
            else:
                restorer.fit(volume)
        engine = {"block_shape": block_shape, "scheduler": scheduler, "overwrite": overwrite}
        _write_outputs(restorer, volume, todo, engine)
        finish_run(dst)
    return {name: Path(path) for name, path in paths.items()}


def train(
    name: str,
    src: str,
    out: Path,
    *,
    factor: float | None = None,
    steps: int | None = None,
    inference: dict[str, Any] | None = None,
    config: Path | None = None,
    resume: bool = False,
    overwrite: bool = False,
    channel: int | None = None,
    **options: Any,
) -> Path:
    """Train method ``name`` on the volume at ``src`` and save it to ``out``.

    Checkpoints go to ``out/checkpoints``; ``resume`` continues from them. An
    ``out`` that exists and is not empty is refused unless ``overwrite``, and
    then replaced only once the new model is complete (see ``model_output``).
    """
    refuse_outputs_over_inputs(
        {"--out": out},
        {"input": src, "--config": config, "--skeleton": options.get("skeleton_path")},
    )
    with run_lock(out):
        target = model_output(out, resume=resume, overwrite=overwrite)  # checks before any work
        volume = open_volume(src, channel=channel)
        check_finite(volume)
        restorer = configure(
            name, factor=factor, config=config, steps=steps, inference=inference, **options
        )
        with target as folder:
            restorer.fit(volume, checkpoint_dir=folder / "checkpoints", resume=resume)  # type: ignore[call-arg]
            restorer.save(folder)
    return Path(out)


def model_output(
    out: Path, *, resume: bool = False, overwrite: bool = False
) -> AbstractContextManager[Path]:
    """Check the model folder ``out``; the context yields the folder to train in and save to.

    Checkpoints go to ``checkpoints/`` in the yielded folder. An absent or
    empty ``out`` is trained in directly; ``resume`` continues from its
    checkpoints, and is also allowed on an ``out`` that holds checkpoints
    (its own unfinished or finished training). Any other existing ``out`` (a
    model, other files, a file) is refused unless ``overwrite``: then the
    model is trained in ``.NAME.partial`` beside ``out`` and replaces ``out``
    only once complete, so a failed training keeps the old model.
    ``.NAME.partial`` is kept after a failure for ``overwrite`` with
    ``resume``, and discarded by ``overwrite`` alone.

    The checks run when this is called, before any work.

    Raises
    ------
    UserInputError
        For an existing ``out`` that may not be replaced or resumed.
    """
    out = Path(out)
    if not _occupied(out) or (resume and not overwrite and _has_checkpoints(out)):
        return nullcontext(out)
    if not overwrite:
        raise UserInputError(_occupied_message(out, resume=resume))
    if not resume:  # start afresh: discard the folder of an earlier failed --overwrite
        shutil.rmtree(partial_path(out, resume=True), ignore_errors=True)
    return atomic_output(out, overwrite=True, resume=True)


def _occupied(path: Path) -> bool:
    """Whether ``path`` is a file, a link or a folder with something in it."""
    if path.is_dir() and not path.is_symlink():
        return any(path.iterdir())
    return path.exists() or path.is_symlink()


def _has_checkpoints(out: Path) -> bool:
    checkpoints = out / "checkpoints"
    return out.is_dir() and checkpoints.is_dir() and any(checkpoints.rglob("*.pt"))


def _occupied_message(out: Path, *, resume: bool) -> str:
    """Why ``out`` is refused as a model folder, and what to do instead."""
    replace = (
        "choose another --out, or pass --overwrite to replace it once the new model is complete"
    )
    if not out.is_dir():
        return f"--out {out} is a file, not a model folder ({replace})"
    if resume:
        return f"{out} holds no checkpoints to resume from ({replace})"
    if _has_checkpoints(out):
        return (
            f"{out} holds a model or an unfinished training (pass --resume to continue its "
            f"training, or {replace})"
        )
    return f"{out} exists and is not empty ({replace})"


def slices(
    src: str,
    dst: str,
    *,
    missing: Sequence[int] | None = None,
    mask: str | None = None,
    detect: bool = False,
    method: str = "diffusion",
    steps: int | None = None,
    model_dir: Path | None = None,
    report: Path | None = None,
    seed: int = 0,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | None = None,
    channel: int | None = None,
    overwrite: bool = False,
) -> Any:
    """Restore missing and damaged sections of the stack at ``src`` into ``dst``.

    Voxels outside the damage are copied unchanged. Returns the
    ``SliceReport`` (also written as JSON to ``report`` when given).
    Killed and called again, diffusion training resumes from ``.NAME.run``
    beside ``dst``, and a ``.zarr`` output from its finished blocks.
    """
    refuse_outputs_over_inputs(
        {"output": dst, "--report": report},
        {"input": src, "--mask": mask, "--model-dir": model_dir},
    )
    if report is not None:
        check_output_early(report, overwrite=overwrite)
    volume = open_volume(src, channel=channel)
    damage_mask = None if mask is None else _open_mask(mask)
    record = {
        "command": "slices",
        "input": input_signature(volume),
        "channel": channel,
        "missing": sorted(set(missing or [])),
        "mask": None if mask is None else input_signature(mask),
        "detect": detect,
        "method": method,
        "steps": steps,
        "seed": seed,
        "model_dir": None if model_dir is None else str(Path(model_dir).resolve()),
    }
    with run_lock(dst):
        folder, pending = start_run(dst, [dst], record, overwrite=overwrite)
        restorer, summary = prepare_slices(
            volume,
            missing=missing,
            mask=damage_mask,
            detect=detect,
            method=method,  # type: ignore[arg-type]
            model_dir=model_dir,
            train_steps=steps,
            seed=seed,
            checkpoint_dir=folder,
        )
        start = time.perf_counter()
        engine = {"block_shape": block_shape, "scheduler": scheduler, "overwrite": overwrite}
        _write_outputs(restorer, volume, {RESTORED: dst} if pending else {}, engine)
        summary.seconds = time.perf_counter() - start
        if report is not None:
            with atomic_output(report, overwrite=overwrite) as partial:
                partial.write_text(summary.to_json())
        finish_run(dst)
    return summary


def _open_mask(path: str) -> Any:
    """The mask's voxels (lazy where possible); its voxel size is not needed."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*gives no voxel size")
        return open_volume(path).data
