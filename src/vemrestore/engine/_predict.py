"""Blockwise prediction of volumes larger than memory.

The output is cut into a regular grid of blocks whose shape equals the output
Zarr chunk shape, so every block writes whole chunks and no two blocks write
the same chunk. For each block the method declares, through
``method.input_region``, the input voxels it needs (the block plus a halo that
covers its receptive field); the engine reads only that region, calls
``method.predict_block`` and writes the result. One call computes every
output the run asks for (``method.outputs``: the restoration and, through
``extra_outputs``, any others), each written to its own file.

Why no blending of overlapping tiles: the read region contains the write
region, and the halo is chosen to cover what influences the written voxels,
so each block is computed as in a whole-volume pass and there are no seams to
hide. Writes never overlap, which makes the result

- exact where the halo covers the whole receptive field (interpolation:
  float rounding only); a network's halo (``inference.halo``) covers most of it, so
  blocks differ from a whole-array pass by a little (the skeleton U-Net with
  its default halo: at most 0.7 grey levels of 255, ``benchmarks/engine_bench.py``);
- resumable: a block is either fully written (and marked done) or recomputed;
- safe to distribute: workers never read-modify-write a shared chunk.

Blending overlapping outputs would hide such differences further, but it
needs read-modify-write of shared chunks (or a second pass), which breaks the
last two properties; a larger ``inference.halo`` shrinks them instead.

Peak memory is set by the block shape (times the number of blocks running at
once), never by the volume size: the input is read lazily per block and each
task writes its own chunks, so nothing large travels back to the caller.

With local threads (the default) several blocks run at once, each calling the
method concurrently. The engine leaves ``torch.set_num_threads`` alone: a torch
method on CPU may want ``num_workers`` times its thread count not to exceed the
cores (or ``num_workers=1`` and torch's own threading).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import numpy as np
import zarr

from vemrestore import __version__
from vemrestore.engine._grid import Block, block_grid, check_block_shape
from vemrestore.engine._ledger import (
    check_run_record,
    finished_everywhere,
    forget_pyramid,
    mark_finished,
    mark_pyramid,
    pyramid_marked,
    read_run_record,
    remove_ledger,
    write_run_record,
)
from vemrestore.engine._outputs import (
    OutputTarget,
    check_output_names,
    describe_targets,
    output_targets,
)
from vemrestore.engine._run import Run, Source, predict_region
from vemrestore.errors import UserInputError
from vemrestore.io import (
    Volume,
    atomic_output,
    volume_signature,
    write_ngff_metadata,
    write_volume,
)
from vemrestore.io._pyramid import create_level_array, plan_pyramid, write_pyramid
from vemrestore.io._zarr import check_zarr_format
from vemrestore.methods._base import RESTORED, Method

if TYPE_CHECKING:
    import distributed

__all__ = ["DEFAULT_BLOCK_SHAPE", "MAX_IN_MEMORY_BYTES", "predict_array", "predict_volume"]

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SHAPE = (64, 256, 256)
# Outputs in formats other than Zarr are assembled in memory; above this size
# the user is asked to write Zarr instead.
MAX_IN_MEMORY_BYTES = 2 * 1024**3
ARRAY_PATH = "0"


def predict_volume(
    method: Method,
    volume: Volume,
    output_path: str | Path | None,
    *,
    extra_outputs: Mapping[str, str | Path] | None = None,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | distributed.Client | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    output_dtype: str | np.dtype = "float32",
    pyramid: bool = True,
    zarr_format: int = 3,
) -> Path:
    """Restore ``volume`` block by block and write the result to ``output_path``.

    One pass over the blocks computes the restoration and the method's other
    requested outputs (``extra_outputs``) with one ``predict_block`` call per
    block, and writes each into its own output. Every output carries the
    result's voxel size and world position, ``method.output_translation``
    of the input's ``translation``, so it overlays the input in a viewer.

    Parameters
    ----------
    method : Method
        A fitted method; it must be picklable when ``scheduler`` is a cluster.
    volume : Volume
        Input, shape (Z, Y, X); a dask array stays lazy and only the region
        each block needs is read.
    output_path : str or Path or None
        Where the restoration goes; None: it is not written (only
        ``extra_outputs``, e.g. those an earlier run left unfinished).
        ``*.zarr``: an OME-Zarr group (array ``"0"``, chunks = ``block_shape``,
        then the pyramid levels ``"1"``, ``"2"``, ... and the NGFF metadata,
        written after the data, the run record in the ``vemrestore``
        attribute), built in a partial folder ``.NAME.partial`` beside it and
        renamed when complete (pyramid included). Re-running the same call after a
        crash resumes it, skipping finished blocks; the partial is reused only
        if the method name and config, the input (path, file sizes and
        modification times, shape, dtype and a digest of sampled voxels:
        ``vemrestore.io.volume_signature``), block shape, output dtype, Zarr
        format, the outputs requested and the method's ``run_fingerprint()`` (if it has
        one: state outside the config, such as trained weights or a damage
        map) are unchanged; otherwise it is refused, naming what changed.
        Other formats (``.tif``, ``.h5``, ``.mrc``) are assembled in memory,
        limited to 2 GiB (all outputs together) and not resumable.
    extra_outputs : mapping of str to str or Path, optional
        Other outputs of the method (names from ``method.outputs`` after
        ``"restored"``) and where to write each, stored as float32. All
        outputs are ``.zarr`` (each its own partial folder and ledger; a
        block counts as done only once written to all of them) or none are.
    block_shape : tuple of int
        Output block shape (z, y, x), equal to the output chunk shape. Peak
        memory grows with it; its input halo comes from the method.
    scheduler : str or distributed.Client, optional
        None: local threads. A dask scheduler address (``"tcp://host:8786"``)
        or a ``distributed.Client``: run the blocks on that cluster; workers
        must see the input and ``output_path`` (shared storage).
    num_workers : int, optional
        Local threads (blocks at once); default: dask's (one per core).
        Only with ``scheduler=None``.
    overwrite : bool
        Replace an existing output and discard any partial run.
    progress : bool
        Show a progress bar (blocks done / total).
    output_dtype : str or numpy.dtype
        Stored dtype of the restoration; float results are cast, integer
        dtypes are rounded and clipped to their range. Default float32.
    pyramid : bool
        Give each Zarr output a multiscale pyramid (2 x mean per level, down
        to about 64 voxels per axis, towards isotropic voxels; each level
        with its own ``scale`` and ``translation``), built blockwise from the
        written full-resolution level after all blocks are done (a resumed
        run builds it again). False: level ``"0"`` only.
    zarr_format : int
        3 (default): Zarr v3 with OME-NGFF 0.5 metadata. 2: Zarr v2 with
        OME-NGFF 0.4 (``.zattrs``, ``"/"`` dimension separator), for Fiji's
        n5-ij and other older readers. Only for ``.zarr`` outputs.

    Returns
    -------
    Path
        The written restoration (``output_path``), or the first extra output
        when ``output_path`` is None.

    Raises
    ------
    UserInputError
        For an invalid option (``zarr_format`` other than 3 or 2), no output,
        an unknown output suffix or name, an
        output that is the input or another output, an existing output
        without ``overwrite``, Zarr outputs mixed with other formats, a
        partial run started with other settings, or non-Zarr outputs that
        would exceed 2 GiB.

    Examples
    --------
    >>> import tempfile
    >>> from vemrestore.io import Volume, open_volume
    >>> from vemrestore.methods import create_method
    >>> volume = Volume(np.ones((8, 16, 16), np.float32), voxel_size=(40, 10, 10))
    >>> out = predict_volume(create_method("cubic", scale_factor=4), volume,
    ...                      Path(tempfile.mkdtemp()) / "out.zarr", block_shape=(16, 16, 16),
    ...                      progress=False)
    >>> result = open_volume(out)
    >>> result.shape, result.voxel_size
    ((32, 16, 16), (10.0, 10.0, 10.0))
    """
    if not isinstance(volume, Volume):
        raise UserInputError(
            f"volume must be a vemrestore Volume, got {type(volume).__name__} "
            "(wrap an array as Volume(array, voxel_size=(z, y, x)))"
        )
    block_shape = check_block_shape(block_shape)
    dtype = _check_output_dtype(output_dtype)
    zarr_format = check_zarr_format(zarr_format)
    if not isinstance(pyramid, bool):
        raise UserInputError(f"pyramid must be True or False, got {pyramid!r}")
    _check_scheduler(scheduler, num_workers, method)
    targets = output_targets(method, volume, output_path, extra_outputs, dtype, overwrite=overwrite)
    outputs = tuple(t.name for t in targets)
    run = Run(method, Source(volume.data), volume.shape, outputs, scheduler, num_workers, progress)
    geometry = _Geometry(
        tuple(run.method.output_voxel_size(volume.voxel_size)),  # type: ignore[arg-type]
        _output_translation(method, volume),
    )
    if targets[0].is_zarr:
        zarr_options = _ZarrOptions(block_shape, dtype, zarr_format, pyramid, overwrite)
        return _predict_to_zarr(run, volume, targets, geometry, zarr_options)
    return _predict_to_file(run, targets, geometry, block_shape, overwrite)


@overload
def predict_array(method: Method, array: Any, *, outputs: None = None) -> np.ndarray: ...


@overload
def predict_array(
    method: Method, array: Any, *, outputs: Sequence[str]
) -> dict[str, np.ndarray]: ...


def predict_array(
    method: Method, array: Any, *, outputs: Sequence[str] | None = None
) -> np.ndarray | dict[str, np.ndarray]:
    """Restore a whole array in one call of ``predict_block`` (no blocks).

    The reference for the blockwise engine, for tests and comparisons; it
    holds the whole input and output in memory.

    Parameters
    ----------
    method : Method
        A fitted method.
    array : array-like, shape (Z, Y, X)
        Input voxels (NumPy, dask or anything sliceable); cast to float32.
    outputs : sequence of str, optional
        Names from ``method.outputs`` to compute; default: the restoration only.

    Returns
    -------
    numpy.ndarray or dict of str to numpy.ndarray
        Float32 arrays of shape ``method.output_shape(array.shape)``: the
        restoration when ``outputs`` is None, else a dict of the named outputs.

    Raises
    ------
    UserInputError
        If ``array`` is not 3D or ``outputs`` names no output of the method.

    Examples
    --------
    >>> from vemrestore.methods import create_method
    >>> method = create_method("linear", scale_factor=2)
    >>> predict_array(method, np.ones((3, 4, 5))).shape
    (6, 4, 5)
    >>> list(predict_array(method, np.ones((3, 4, 5)), outputs=["restored"]))
    ['restored']
    """
    if len(array.shape) != 3:
        raise UserInputError(
            f"array must be 3D (Z, Y, X), got shape {tuple(array.shape)} (pass one 3D volume)"
        )
    names = (RESTORED,) if outputs is None else check_output_names(method, outputs)
    input_shape = tuple(int(n) for n in array.shape)
    output_shape = method.output_shape(input_shape)  # type: ignore[arg-type]
    region = tuple(slice(0, int(n)) for n in output_shape)
    result = predict_region(method, Source(array), input_shape, region, names)  # type: ignore[arg-type]
    arrays = {name: out.astype(np.float32, copy=False) for name, out in result.items()}
    return arrays[RESTORED] if outputs is None else arrays


class _ZarrSink:
    """Writes each output of a block into its partial Zarr, then marks the block done there."""

    def __init__(self, partials: Mapping[str, tuple[Path, np.dtype]]) -> None:
        self.partials = {name: (str(root), dtype) for name, (root, dtype) in partials.items()}

    def write(self, block: Block, outputs: Mapping[str, np.ndarray]) -> None:
        for name, (root, dtype) in self.partials.items():
            array = zarr.open_array(store=root, path=ARRAY_PATH, mode="r+")
            array[block.region] = _cast(outputs[name], dtype)
            mark_finished(Path(root), block.id)


class _MemorySink:
    """Writes each output of a block into its in-memory array (local threads only)."""

    def __init__(self, arrays: Mapping[str, np.ndarray]) -> None:
        self.arrays = arrays

    def write(self, block: Block, outputs: Mapping[str, np.ndarray]) -> None:
        for name, array in self.arrays.items():
            array[block.region] = _cast(outputs[name], array.dtype)


class _Geometry(NamedTuple):
    """Where the outputs lie in world space (nm, z y x)."""

    voxel_size: tuple[float, float, float]
    translation: tuple[float, float, float]


class _ZarrOptions(NamedTuple):
    """How Zarr outputs are stored."""

    block_shape: tuple[int, int, int]
    dtype: np.dtype
    zarr_format: int
    pyramid: bool
    overwrite: bool


def _output_translation(method: Method, volume: Volume) -> tuple[float, float, float]:
    """World position (nm) of the result's voxel (0, 0, 0) centre.

    ``method.output_translation`` when the method has it; otherwise the result
    is taken to span the input's extent (voxel edges aligned), which is what
    the built-in resampling methods do.
    """
    translate = getattr(method, "output_translation", None)
    if translate is not None:
        return tuple(float(t) for t in translate(volume.translation, volume.voxel_size))  # type: ignore[return-value]
    out_voxel = method.output_voxel_size(volume.voxel_size)
    return tuple(  # type: ignore[return-value]
        float(t + 0.5 * (v_out - v_in))
        for t, v_in, v_out in zip(volume.translation, volume.voxel_size, out_voxel, strict=True)
    )


def _predict_to_zarr(
    run: Run,
    volume: Volume,
    targets: list[OutputTarget],
    geometry: _Geometry,
    options: _ZarrOptions,
) -> Path:
    fingerprint = {
        "method": run.method.config.method,
        "config": run.method.config.model_dump(mode="json"),
        # Path, file sizes and times, shape, dtype and a content digest: an input
        # changed in place since the partial was started is refused, not mixed in.
        "input": volume_signature(volume),
        "block_shape": list(options.block_shape),
        "output_dtype": options.dtype.name,
        "zarr_format": options.zarr_format,
        "outputs": list(run.outputs),
    }
    state = getattr(run.method, "run_fingerprint", None)
    if state is not None:
        # State outside the config that changes the output (e.g. a damage map).
        fingerprint["state"] = state()
    blocks = block_grid(run.output_shape, options.block_shape)  # type: ignore[arg-type]
    levels = plan_pyramid(run.output_shape, geometry.voxel_size, geometry.translation)
    levels = levels[: None if options.pyramid else 1]
    with ExitStack() as stack:
        # Each output is built in its own partial folder; all are renamed once all are
        # complete, the restoration last (if it exists, so do the others).
        partials = {
            t.name: stack.enter_context(
                atomic_output(t.file, overwrite=options.overwrite, resume=True)
            )
            for t in targets
        }
        groups = {
            t.name: _open_partial(
                partials[t.name], {**fingerprint, "output": t.name}, run, geometry, options, t.dtype
            )
            for t in targets
        }
        done = finished_everywhere(partials.values())
        todo = [b for b in blocks if b.id not in done]
        if todo:
            for partial in partials.values():
                forget_pyramid(partial)
        if len(todo) < len(blocks):
            logger.info(
                "resuming %s: skipping %d of %d blocks already done",
                ", ".join(map(str, partials.values())),
                len(blocks) - len(todo),
                len(blocks),
            )
        logger.info(
            "predicting %d blocks of %s into %s",
            len(todo),
            options.block_shape,
            ", ".join(map(str, partials.values())),
        )
        run.execute(
            _ZarrSink({t.name: (partials[t.name], t.dtype) for t in targets}), todo, len(blocks)
        )
        # Pyramid and metadata after the data; the run records move from the ledgers
        # into the attributes.
        described = [dataclasses.asdict(level) for level in levels]
        for t in targets:
            group, partial = groups[t.name], partials[t.name]
            if not pyramid_marked(partial, described):
                logger.info("building %d pyramid levels in %s", len(levels) - 1, partial)
                write_pyramid(group, levels, num_workers=run.num_workers)
                mark_pyramid(partial, described)
            write_ngff_metadata(
                group,
                geometry.voxel_size,
                translation=geometry.translation,
                array_path=ARRAY_PATH,
                name=t.file.stem,
                pyramid=levels[1:],
            )
            group.attrs.update({"vemrestore": read_run_record(partial)})
    # The ledgers go only after the renames: a partial whose rename failed (disk full,
    # read-only) still holds its record, so the next run finishes it without recomputing.
    for t in targets:
        remove_ledger(t.file)
    return targets[0].file


def _open_partial(
    partial: Path,
    fingerprint: dict[str, Any],
    run: Run,
    geometry: _Geometry,
    options: _ZarrOptions,
    dtype: np.dtype,
) -> zarr.Group:
    """The Zarr group of one output's partial folder, created or checked for resuming."""
    if partial.exists() and options.overwrite:
        shutil.rmtree(partial)
    if partial.exists():
        check_run_record(partial, fingerprint)
    else:
        write_run_record(
            partial,
            fingerprint,
            output_shape=list(run.output_shape),
            voxel_size=list(geometry.voxel_size),
            translation=list(geometry.translation),
            vemrestore_version=__version__,
        )
    group = zarr.open_group(store=str(partial), mode="a", zarr_format=options.zarr_format)
    if ARRAY_PATH not in group:
        create_level_array(group, ARRAY_PATH, run.output_shape, dtype, options.block_shape)
    return group


def _predict_to_file(
    run: Run,
    targets: list[OutputTarget],
    geometry: _Geometry,
    block_shape: tuple[int, int, int],
    overwrite: bool,
) -> Path:
    size = math.prod(run.output_shape)
    nbytes = sum(size * t.dtype.itemsize for t in targets)
    if nbytes > MAX_IN_MEMORY_BYTES:
        dtypes = ", ".join(t.dtype.name for t in targets)
        raise UserInputError(
            f"{describe_targets(targets)} would hold {nbytes / 1024**3:.1f} GiB "
            f"({run.output_shape} {dtypes}), more than the "
            f"{MAX_IN_MEMORY_BYTES / 1024**3:.0f} GiB assembled in memory for this format "
            "(write .zarr outputs instead)"
        )
    if run.scheduler is not None:
        raise UserInputError(
            f"scheduler={run.scheduler!r} needs .zarr outputs that the workers write into, "
            f"got {describe_targets(targets)} "
            "(write .zarr outputs or leave scheduler unset)"
        )
    arrays = {t.name: np.zeros(run.output_shape, dtype=t.dtype) for t in targets}
    blocks = block_grid(run.output_shape, block_shape)  # type: ignore[arg-type]
    run.execute(_MemorySink(arrays), blocks, len(blocks))
    written = [
        write_volume(
            Volume(
                arrays[t.name], voxel_size=geometry.voxel_size, translation=geometry.translation
            ),
            t.path,
            overwrite=overwrite,
        )
        for t in targets
    ]
    return written[0]


def _check_output_dtype(output_dtype: str | np.dtype) -> np.dtype:
    try:
        dtype = np.dtype(output_dtype)
    except TypeError:
        dtype = None
    if dtype is None or dtype.kind not in "fiu":
        raise UserInputError(
            f"output_dtype must be a numeric dtype, got {output_dtype!r} "
            "(use 'float32', 'float16', 'uint16' or 'uint8')"
        )
    return dtype


def _check_scheduler(scheduler: Any, num_workers: int | None, method: Method) -> None:
    if scheduler is not None:
        import cloudpickle
        import distributed

        if not isinstance(scheduler, str | distributed.Client):
            raise UserInputError(
                f"scheduler must be None, a dask scheduler address or a distributed.Client, "
                f"got {type(scheduler).__name__} (for example scheduler='tcp://127.0.0.1:8786')"
            )
        try:
            cloudpickle.dumps(method)
        except Exception as err:  # whatever pickling raises, the method cannot be sent
            raise UserInputError(
                f"scheduler={scheduler!r} sends the method to the workers, but "
                f"{type(method).__name__} cannot be pickled ({err}) "
                "(leave scheduler unset to run on local threads)"
            ) from err
    if num_workers is not None:
        if scheduler is not None:
            raise UserInputError(
                f"num_workers={num_workers!r} applies to local threads only, but "
                f"scheduler={scheduler!r} was given (size the cluster instead, or drop num_workers)"
            )
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
            raise UserInputError(
                f"num_workers must be a positive integer, got {num_workers!r} (for example 4)"
            )


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return data.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return np.clip(np.rint(data), info.min, info.max).astype(dtype)
