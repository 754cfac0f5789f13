"""One function per command: open -> method -> engine -> write, with a run record.

The CLI, the demo and the napari widgets call these; they hold no method
logic (methods are built by name through the registry, their outputs named
by the method itself).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
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
    start_run,
)
from vemrestore.api._slices import prepare_slices
from vemrestore.engine import DEFAULT_BLOCK_SHAPE, predict_volume
from vemrestore.io import atomic_output, check_finite, open_volume
from vemrestore.methods import RESTORED, Method, load_method

__all__ = ["iso", "predict", "slices", "train"]


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
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    skeleton = options.get("skeleton_path")
    record = {
        "command": "iso",
        "input": input_signature(src),
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
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    record = {
        "command": "predict",
        "model": file_signature(Path(model_dir) / "weights.pt"),
        "input": input_signature(src),
        "channel": channel,
    }
    return _run(restorer, volume, dst, record, overwrite, block_shape, scheduler, fit=False)


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
    channel: int | None = None,
    **options: Any,
) -> Path:
    """Train method ``name`` on the volume at ``src`` and save it to ``out``.

    Checkpoints go to ``out/checkpoints``; ``resume`` continues from them.
    """
    volume = open_volume(src, channel=channel)
    check_finite(volume)
    restorer = configure(
        name, factor=factor, config=config, steps=steps, inference=inference, **options
    )
    restorer.fit(volume, checkpoint_dir=Path(out) / "checkpoints", resume=resume)  # type: ignore[call-arg]
    restorer.save(Path(out))
    return Path(out)


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
    if report is not None:
        check_output_early(report, overwrite=overwrite)
    volume = open_volume(src, channel=channel)
    damage_mask = None if mask is None else _open_mask(mask)
    record = {
        "command": "slices",
        "input": input_signature(src),
        "channel": channel,
        "missing": sorted(set(missing or [])),
        "mask": None if mask is None else input_signature(mask),
        "detect": detect,
        "method": method,
        "steps": steps,
        "seed": seed,
        "model_dir": None if model_dir is None else str(Path(model_dir).resolve()),
    }
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
