"""Blockwise prediction of volumes larger than memory.

The output is cut into a regular grid of blocks whose shape equals the output
Zarr chunk shape, so every block writes whole chunks and no two blocks write
the same chunk. For each block the method declares, through
``method.input_region``, the input voxels it needs (the block plus a halo that
covers its receptive field); the engine reads only that region, calls
``method.predict_block`` and writes the result.

Why no blending of overlapping tiles: the read region contains the write
region, and the halo is chosen to cover what influences the written voxels,
so each block is computed as in a whole-volume pass and there are no seams to
hide. Writes never overlap, which makes the result

- exact where the halo covers the whole receptive field (interpolation:
  float rounding only); a network's halo (``halo_yx``) covers most of it, so
  blocks differ from a whole-array pass by a little (the skeleton U-Net with
  its default halo: at most 0.7 grey levels of 255, ``benchmarks/engine_bench.py``);
- resumable: a block is either fully written (and marked done) or recomputed;
- safe to distribute: workers never read-modify-write a shared chunk.

Blending overlapping outputs would hide such differences further, but it
needs read-modify-write of shared chunks (or a second pass), which breaks the
last two properties; a larger ``halo_yx`` shrinks them instead.

Peak memory is set by the block shape (times the number of blocks running at
once), never by the volume size: the input is read lazily per block and each
task writes its own chunks, so nothing large travels back to the caller.

With local threads (the default) several blocks run at once, each calling the
method concurrently. The engine leaves ``torch.set_num_threads`` alone: a torch
method on CPU may want ``num_workers`` times its thread count not to exceed the
cores (or ``num_workers=1`` and torch's own threading).
"""

from __future__ import annotations

import logging
import math
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import dask
import numpy as np
import zarr
from dask.callbacks import Callback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vemrestore import __version__
from vemrestore.engine._grid import Block, block_grid, check_block_shape
from vemrestore.engine._ledger import (
    check_run_record,
    finished_blocks,
    mark_finished,
    read_run_record,
    remove_ledger,
    write_run_record,
)
from vemrestore.errors import UserInputError
from vemrestore.io import (
    Volume,
    atomic_output,
    check_output_path,
    format_of,
    same_file,
    split_dataset_path,
    write_ngff_metadata,
    write_volume,
)
from vemrestore.methods._base import BlockRequest, Method

if TYPE_CHECKING:
    import distributed

__all__ = ["DEFAULT_BLOCK_SHAPE", "MAX_IN_MEMORY_BYTES", "predict_array", "predict_volume"]

logger = logging.getLogger(__name__)

DEFAULT_BLOCK_SHAPE = (64, 256, 256)
# Outputs in formats other than Zarr are assembled in memory; above this size
# the user is asked to write Zarr instead.
MAX_IN_MEMORY_BYTES = 2 * 1024**3
ARRAY_PATH = "0"
_KEY_PREFIX = "vemrestore-block-"

Region = tuple[slice, slice, slice]


def predict_volume(
    method: Method,
    volume: Volume,
    output_path: str | Path,
    *,
    block_shape: tuple[int, int, int] = DEFAULT_BLOCK_SHAPE,
    scheduler: str | distributed.Client | None = None,
    num_workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    output_dtype: str | np.dtype = "float32",
) -> Path:
    """Restore ``volume`` block by block and write the result to ``output_path``.

    Parameters
    ----------
    method : Method
        A fitted method; it must be picklable when ``scheduler`` is a cluster.
    volume : Volume
        Input, shape (Z, Y, X); a dask array stays lazy and only the region
        each block needs is read.
    output_path : str or Path
        ``*.zarr``: an OME-Zarr group (array ``"0"``, chunks = ``block_shape``,
        NGFF metadata written after the data, the run record in the
        ``vemrestore`` attribute), built in a partial folder ``.NAME.partial``
        beside it and renamed when complete. Re-running the same call after a
        crash resumes it, skipping finished blocks; the partial is reused only
        if the method name and config, input source and shape, block shape,
        output dtype and the method's ``run_fingerprint()`` (if it has one:
        state outside the config, such as trained weights or a damage map)
        are unchanged.
        Other formats (``.tif``, ``.h5``, ``.mrc``) are assembled in memory,
        limited to 2 GiB and not resumable.
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
        Stored dtype; float results are cast, integer dtypes are rounded and
        clipped to their range. Default float32.

    Returns
    -------
    Path
        The written output.

    Raises
    ------
    UserInputError
        For an invalid option, an unknown output suffix, an output that is the
        input, an existing output without ``overwrite``, a partial run started
        with other settings, or a non-Zarr output that would exceed 2 GiB.

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
    _check_scheduler(scheduler, num_workers, method)
    file_path, inner = split_dataset_path(output_path)
    is_zarr = format_of(file_path, source=output_path) == "zarr"
    if is_zarr and inner is not None:
        raise UserInputError(
            f"output_path={str(output_path)!r} names an array inside a Zarr store; the result "
            f"is written as an OME-Zarr group (give the store path {str(file_path)!r})"
        )
    if volume.source is not None and same_file(split_dataset_path(volume.source)[0], file_path):
        raise UserInputError(
            f"output_path={str(output_path)!r} is the input {volume.source} (choose another output)"
        )
    check_output_path(file_path, overwrite=overwrite)
    run = _Run(method, _Source(volume.data), volume.shape, scheduler, num_workers, progress)
    if is_zarr:
        return _predict_to_zarr(run, volume, file_path, block_shape, dtype, overwrite)
    return _predict_to_file(run, volume, output_path, block_shape, dtype, overwrite)


def predict_array(method: Method, array: Any) -> np.ndarray:
    """Restore a whole array in one call of ``predict_block`` (no blocks).

    The reference for the blockwise engine, for tests and comparisons; it
    holds the whole input and output in memory.

    Parameters
    ----------
    method : Method
        A fitted method.
    array : array-like, shape (Z, Y, X)
        Input voxels (NumPy, dask or anything sliceable); cast to float32.

    Returns
    -------
    numpy.ndarray of float32, shape ``method.output_shape(array.shape)``

    Examples
    --------
    >>> from vemrestore.methods import create_method
    >>> predict_array(create_method("linear", scale_factor=2), np.ones((3, 4, 5))).shape
    (6, 4, 5)
    """
    if len(array.shape) != 3:
        raise UserInputError(
            f"array must be 3D (Z, Y, X), got shape {tuple(array.shape)} (pass one 3D volume)"
        )
    input_shape = tuple(int(n) for n in array.shape)
    output_shape = method.output_shape(input_shape)  # type: ignore[arg-type]
    region = tuple(slice(0, int(n)) for n in output_shape)
    out = _predict_region(method, _Source(array), input_shape, region)  # type: ignore[arg-type]
    return out.astype(np.float32, copy=False)


class _Source:
    """Lazy input: reads one region into memory as float32.

    A wrapper rather than the bare array so that dask never treats the input
    as a dependency of the block tasks (which would compute all of it).
    """

    def __init__(self, data: Any) -> None:
        self.data = data

    def read(self, region: Region) -> np.ndarray:
        part = self.data[region]
        if dask.is_dask_collection(part):
            # Read in the calling task's thread: a nested compute on a cluster
            # worker could otherwise wait for the worker's own (busy) slots.
            part = part.compute(scheduler="synchronous")
        return np.array(part, dtype=np.float32)  # a copy: methods may work in place


class _ZarrSink:
    """Writes a block into the partial Zarr, then marks it done."""

    def __init__(self, root: Path, dtype: np.dtype) -> None:
        self.root = str(root)
        self.dtype = dtype

    def write(self, block: Block, data: np.ndarray) -> None:
        array = zarr.open_array(store=self.root, path=ARRAY_PATH, mode="r+")
        array[block.region] = _cast(data, self.dtype)
        mark_finished(Path(self.root), block.id)


class _MemorySink:
    """Writes blocks into one in-memory array (local threads only)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def write(self, block: Block, data: np.ndarray) -> None:
        self.array[block.region] = _cast(data, self.array.dtype)


class _Run:
    """What every block task of one run shares, and how the tasks are executed."""

    def __init__(
        self,
        method: Method,
        source: _Source,
        input_shape: tuple[int, int, int],
        scheduler: str | distributed.Client | None,
        num_workers: int | None,
        progress: bool,
    ) -> None:
        self.method = method
        self.source = source
        self.input_shape = input_shape
        self.output_shape = tuple(int(n) for n in method.output_shape(input_shape))
        self.scheduler = scheduler
        self.num_workers = num_workers
        self.progress = progress

    def execute(self, sink: _ZarrSink | _MemorySink, blocks: list[Block], total: int) -> None:
        """Run ``blocks`` (of ``total`` in the grid) as dask tasks writing into ``sink``."""
        token = uuid.uuid4().hex
        # One graph node each for the shared objects: sent once per worker, not per task.
        shared = [
            dask.delayed(obj, name=f"vemrestore-{name}-{token}", traverse=False)
            for name, obj in (("method", self.method), ("source", self.source), ("sink", sink))
        ]
        run_block = dask.delayed(_run_block, pure=False)
        tasks = [
            run_block(
                *shared, block, self.input_shape, dask_key_name=f"{_KEY_PREFIX}{block.id}-{token}"
            )
            for block in blocks
        ]
        with _progress_bar(self.progress, total, total - len(blocks)) as advance:
            if self.scheduler is None:
                with _BlockCallback(advance):
                    dask.compute(*tasks, scheduler="threads", num_workers=self.num_workers)
            elif isinstance(self.scheduler, str):
                import distributed

                try:
                    client = distributed.Client(self.scheduler)
                except (OSError, TimeoutError) as err:
                    raise UserInputError(
                        f"cannot connect to the dask scheduler at scheduler={self.scheduler!r} "
                        f"({err}; start one with `dask scheduler` or leave scheduler unset "
                        "for local threads)"
                    ) from err
                with client:
                    _compute_on_cluster(client, tasks, advance)
            else:
                _compute_on_cluster(self.scheduler, tasks, advance)


def _run_block(
    method: Method,
    source: _Source,
    sink: _ZarrSink | _MemorySink,
    block: Block,
    input_shape: tuple[int, int, int],
) -> str:
    sink.write(block, _predict_region(method, source, input_shape, block.region))
    return block.id


def _predict_region(
    method: Method, source: _Source, input_shape: tuple[int, int, int], output_region: Region
) -> np.ndarray:
    in_region = tuple(method.input_region(output_region, input_shape))
    _check_input_region(method, in_region, input_shape, output_region)
    request = BlockRequest(tuple(int(s.start) for s in in_region), output_region)  # type: ignore[arg-type]
    out = np.asarray(method.predict_block(source.read(in_region), request))  # type: ignore[arg-type]
    if out.shape != request.output_shape:
        raise RuntimeError(
            f"{type(method).__name__}.predict_block returned shape {out.shape} for output "
            f"region {_fmt(output_region)}, expected {request.output_shape} (a bug in the method)"
        )
    return out


def _predict_to_zarr(
    run: _Run,
    volume: Volume,
    path: Path,
    block_shape: tuple[int, int, int],
    dtype: np.dtype,
    overwrite: bool,
) -> Path:
    fingerprint = {
        "method": run.method.config.method,
        "config": run.method.config.model_dump(mode="json"),
        "input_source": volume.source,
        "input_shape": list(volume.shape),
        "block_shape": list(block_shape),
        "output_dtype": dtype.name,
    }
    state = getattr(run.method, "run_fingerprint", None)
    if state is not None:
        # State outside the config that changes the output (e.g. a damage map).
        fingerprint["state"] = state()
    blocks = block_grid(run.output_shape, block_shape)  # type: ignore[arg-type]
    voxel_size = tuple(run.method.output_voxel_size(volume.voxel_size))
    with atomic_output(path, overwrite=overwrite, resume=True) as partial:
        if partial.exists() and overwrite:
            shutil.rmtree(partial)
        if partial.exists():
            check_run_record(partial, fingerprint)
        else:
            write_run_record(
                partial,
                fingerprint,
                output_shape=list(run.output_shape),
                voxel_size=list(voxel_size),
                vemrestore_version=__version__,
            )
        group = zarr.open_group(store=str(partial), mode="a", zarr_format=3)
        if ARRAY_PATH not in group:
            group.create_array(
                ARRAY_PATH,
                shape=run.output_shape,
                chunks=block_shape,
                dtype=dtype,
                fill_value=0,
                dimension_names=("z", "y", "x"),
            )
        done = finished_blocks(partial)
        todo = [b for b in blocks if b.id not in done]
        if len(todo) < len(blocks):
            logger.info(
                "resuming %s: skipping %d of %d blocks already done",
                partial,
                len(blocks) - len(todo),
                len(blocks),
            )
        logger.info("predicting %d blocks of %s into %s", len(todo), block_shape, partial)
        run.execute(_ZarrSink(partial, dtype), todo, len(blocks))
        # Metadata after the data; the run record moves from the ledger into the attributes.
        write_ngff_metadata(group, voxel_size, array_path=ARRAY_PATH, name=path.stem)
        group.attrs.update({"vemrestore": read_run_record(partial)})
        remove_ledger(partial)
    return path


def _predict_to_file(
    run: _Run,
    volume: Volume,
    output_path: str | Path,
    block_shape: tuple[int, int, int],
    dtype: np.dtype,
    overwrite: bool,
) -> Path:
    nbytes = math.prod(run.output_shape) * dtype.itemsize
    if nbytes > MAX_IN_MEMORY_BYTES:
        raise UserInputError(
            f"output_path={str(output_path)!r} would hold {nbytes / 1024**3:.1f} GiB "
            f"({run.output_shape} {dtype.name}), more than the "
            f"{MAX_IN_MEMORY_BYTES / 1024**3:.0f} GiB assembled in memory for this format "
            "(write a .zarr output instead)"
        )
    if run.scheduler is not None:
        raise UserInputError(
            f"scheduler={run.scheduler!r} needs a .zarr output that the workers write into, "
            f"got output_path={str(output_path)!r} (write a .zarr output or leave scheduler unset)"
        )
    array = np.zeros(run.output_shape, dtype=dtype)
    blocks = block_grid(run.output_shape, block_shape)  # type: ignore[arg-type]
    run.execute(_MemorySink(array), blocks, len(blocks))
    voxel_size = tuple(run.method.output_voxel_size(volume.voxel_size))
    return write_volume(Volume(array, voxel_size=voxel_size), output_path, overwrite=overwrite)


def _compute_on_cluster(
    client: distributed.Client, tasks: list[Any], advance: Callable[[], None]
) -> None:
    import distributed

    futures = client.compute(tasks)
    try:
        for future in distributed.as_completed(futures):
            future.result()  # re-raises a failed block's error here
            advance()
    except BaseException:
        client.cancel(futures)
        raise


class _BlockCallback(Callback):
    """Advances the progress bar whenever a block task finishes (threads)."""

    def __init__(self, advance: Callable[[], None]) -> None:
        super().__init__()
        self._advance = advance

    def _posttask(self, key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if isinstance(key, str) and key.startswith(_KEY_PREFIX):
            self._advance()


@contextmanager
def _progress_bar(enabled: bool, total: int, completed: int) -> Iterator[Callable[[], None]]:
    """A rich bar of blocks done / total; yields a function that adds one block."""
    columns = (TextColumn("blocks"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not enabled) as bar:
        task = bar.add_task("blocks", total=total, completed=completed)
        yield lambda: bar.advance(task)


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


def _check_input_region(
    method: Method,
    region: Iterable[slice],
    input_shape: tuple[int, int, int],
    output_region: Region,
) -> None:
    region = tuple(region)
    ok = len(region) == 3 and all(
        isinstance(s, slice)
        and s.step in (None, 1)
        and isinstance(s.start, int | np.integer)
        and isinstance(s.stop, int | np.integer)
        and 0 <= s.start < s.stop <= n
        for s, n in zip(region, input_shape, strict=False)
    )
    if not ok:
        raise RuntimeError(
            f"{type(method).__name__}.input_region returned {region!r} for output region "
            f"{_fmt(output_region)}; expected three non-empty slices with step 1 inside the "
            f"input shape {input_shape} (a bug in the method)"
        )


def _cast(data: np.ndarray, dtype: np.dtype) -> np.ndarray:
    if dtype.kind == "f":
        return data.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    return np.clip(np.rint(data), info.min, info.max).astype(dtype)


def _fmt(region: Region) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in region) + "]"
