"""One function per command: open -> method -> engine -> write, with a run record.

The CLI, the demo and the napari widgets call these; they hold no method
logic (methods are built by name through the registry, their outputs named
by the method itself).
"""

from __future__ import annotations

import shutil
import time
import warnings
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from vemrestore.api._configure import (
    axial_factor,
    config_factor,
    configure,
    factor_mismatch,
)
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
from vemrestore.io import (
    Volume,
    atomic_output,
    check_finite,
    open_volume,
    partial_path,
    refuse_outputs_over_inputs,
)
from vemrestore.methods import RESTORED, AxialConfig, Method, load_method, method_config_class

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
    factor: float | None = None,
    method: str = "cubic",
    steps: int | None = None,
    inference: dict[str, Any] | None = None,
    config: Path | None = None,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | None = None,
    pyramid: bool = True,
    zarr_format: int = 3,
    channel: int | None = None,
    overwrite: bool = False,
    voxel_size: Sequence[float] | None = None,
    force: bool = False,
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
        ``.tif``/``.h5``/``.mrc`` assembled in memory). The outputs overlay
        the input: their translation is the method's ``output_translation``.
    factor : float, optional
        Axial factor (section thickness in output voxels). Default: the
        ``scale_factor`` of ``config``, else the input's z / x voxel size
        (`axial_factor`). A factor more than 10 % from z / x is refused
        unless ``force``.
    method : str
        An axial method (``axial_methods()``).
    steps, inference, config, **options
        As in ``configure``.
    block_shape, scheduler, pyramid, zarr_format
        Engine options (output block = Zarr chunk; dask scheduler address).
    channel : int, optional
        Channel of a multi-channel input.
    overwrite : bool
        Replace existing outputs and discard an unfinished run.
    voxel_size : sequence of float, optional
        (z, y, x) in nm, instead of the input file's.
    force : bool
        Keep a ``factor`` that disagrees with the voxel sizes (with a warning).

    Returns
    -------
    dict of str to pathlib.Path
        Output name -> path written (outputs kept from an interrupted run included).
    """
    volume = open_volume(src, channel=channel, voxel_size=voxel_size)
    factor = _checked_factor(method, volume, factor, config, force)
    restorer = configure(
        method, factor=factor, config=config, steps=steps, inference=inference, **options
    )
    skeleton = options.get("skeleton_path")
    _refuse_over_inputs(restorer, dst, {"input": src, "--config": config, "--skeleton": skeleton})
    check_finite(volume)
    record = {
        "command": "iso",
        "input": input_signature(volume),
        "space": _space(volume),
        "channel": channel,
        "config": restorer.config.model_dump(mode="json"),
        "skeleton": None if skeleton is None else file_signature(Path(skeleton) / "weights.pt"),
    }
    engine = _engine_options(block_shape, scheduler, pyramid, zarr_format, overwrite)
    return _run(restorer, volume, dst, record, engine, fit=True)


def predict(
    model_dir: Path,
    src: str,
    dst: str,
    *,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | None = None,
    pyramid: bool = True,
    zarr_format: int = 3,
    channel: int | None = None,
    overwrite: bool = False,
    voxel_size: Sequence[float] | None = None,
) -> dict[str, Path]:
    """Apply a saved model to the volume at ``src``; outputs as in ``iso``.

    ``voxel_size`` (z, y, x) in nm replaces the input file's. An axial
    model whose factor disagrees with the input's z / x voxel size by more
    than 10 % runs with a warning (the output voxel size then says so).
    """
    restorer = load_method(model_dir)
    _refuse_over_inputs(restorer, dst, {"model folder": model_dir, "input": src})
    volume = open_volume(src, channel=channel, voxel_size=voxel_size)
    check_finite(volume)
    _warn_on_factor_mismatch(restorer, volume)
    record = {
        "command": "predict",
        "model": file_signature(Path(model_dir) / "weights.pt"),
        "input": input_signature(volume),
        "space": _space(volume),
        "channel": channel,
    }
    engine = _engine_options(block_shape, scheduler, pyramid, zarr_format, overwrite)
    return _run(restorer, volume, dst, record, engine, fit=False)


def _warn_on_factor_mismatch(restorer: Method, volume: Volume) -> None:
    """Warn when a saved axial model's factor disagrees with the input's voxel sizes."""
    if not isinstance(restorer.config, AxialConfig):
        return
    k = restorer.config.scale_factor
    mismatch = factor_mismatch(volume, k)
    if mismatch is not None:
        warnings.warn(
            f"the model restores factor {k:g}, which disagrees with {mismatch} (use a "
            "model trained for this factor, or correct the sizes with --voxel-size Z,Y,X)",
            UserWarning,
            stacklevel=3,
        )


def _checked_factor(
    method: str, volume: Volume, factor: float | None, config: Path | None, force: bool
) -> float | None:
    """The factor for an axial ``method`` (`axial_factor`); None for another method or when
    ``config`` gives it (then checked against the voxel sizes the same way)."""
    if not issubclass(method_config_class(method), AxialConfig):
        return factor  # `configure` refuses a factor for a method that is not axial
    from_file = config_factor(config) if factor is None else None
    if from_file is not None:
        axial_factor(volume, from_file, force=force)
        return None
    return axial_factor(volume, factor, force=force)


def _space(volume: Volume) -> dict[str, list[float]]:
    """The input's voxel size and translation, which the outputs' metadata derive from."""
    return {"voxel_size": list(volume.voxel_size), "translation": list(volume.translation)}


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
    engine: dict[str, Any],
    *,
    fit: bool,
) -> dict[str, Path]:
    paths = output_paths(restorer.outputs, dst)
    with run_lock(dst):
        folder, pending = start_run(
            dst, list(paths.values()), record, overwrite=engine["overwrite"]
        )
        todo = {name: path for name, path in paths.items() if path in pending}
        if todo and fit:
            if hasattr(restorer.config, "train"):
                restorer.fit(volume, checkpoint_dir=folder, resume=True)  # type: ignore[call-arg]
            else:
                restorer.fit(volume)
        _write_outputs(restorer, volume, todo, engine)
        finish_run(dst)
    return {name: Path(path) for name, path in paths.items()}


def _engine_options(
    block_shape: tuple[int, int, int],
    scheduler: str | None,
    pyramid: bool,
    zarr_format: int,
    overwrite: bool,
) -> dict[str, Any]:
    """Keyword options of ``predict_volume`` shared by the commands that restore."""
    return dict(
        block_shape=block_shape,
        scheduler=scheduler,
        pyramid=pyramid,
        zarr_format=zarr_format,
        overwrite=overwrite,
    )


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
    voxel_size: Sequence[float] | None = None,
    force: bool = False,
    **options: Any,
) -> Path:
    """Train method ``name`` on the volume at ``src`` and save it to ``out``.

    Checkpoints go to ``out/checkpoints``; ``resume`` continues from them. An
    ``out`` that exists and is not empty is refused unless ``overwrite``, and
    then replaced only once the new model is complete (see ``model_output``).
    An axial method's ``factor`` defaults to the input's z / x voxel size
    (``voxel_size`` replaces the file's) and is checked against it, as in
    `iso` (``force`` keeps a disagreeing one).
    """
    refuse_outputs_over_inputs(
        {"--out": out},
        {"input": src, "--config": config, "--skeleton": options.get("skeleton_path")},
    )
    with run_lock(out):
        target = model_output(out, resume=resume, overwrite=overwrite)  # checks before any work
        volume = open_volume(src, channel=channel, voxel_size=voxel_size)
        factor = _checked_factor(name, volume, factor, config, force)
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
    from_scratch: bool = False,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | None = None,
    pyramid: bool = True,
    zarr_format: int = 3,
    channel: int | None = None,
    overwrite: bool = False,
    voxel_size: Sequence[float] | None = None,
) -> Any:
    """Restore missing and damaged sections of the stack at ``src`` into ``dst``.

    Voxels outside the damage are copied unchanged; ``voxel_size`` (z, y, x)
    in nm replaces the input file's. Diffusion training fine-tunes the shipped
    prior unless ``from_scratch``. Returns the
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
    volume = open_volume(src, channel=channel, voxel_size=voxel_size)
    damage_mask = None if mask is None else _open_mask(mask)
    record = {
        "command": "slices",
        "input": input_signature(volume),
        "space": _space(volume),
        "channel": channel,
        "missing": sorted(set(missing or [])),
        "mask": None if mask is None else input_signature(mask),
        "detect": detect,
        "method": method,
        "steps": steps,
        "seed": seed,
        "from_scratch": from_scratch,
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
            from_scratch=from_scratch,
        )
        start = time.perf_counter()
        engine = _engine_options(block_shape, scheduler, pyramid, zarr_format, overwrite)
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
