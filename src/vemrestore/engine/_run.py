"""Executing one run's block tasks: read a block's input, predict, hand the outputs to a sink.

Each block is one dask task that reads its input region, calls
``predict_block`` once for all the outputs the run asks for and passes them
to the run's sink (which writes them); tasks run on local threads or a dask
cluster, behind a progress bar of blocks done.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

import dask
import numpy as np
from dask.callbacks import Callback
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from vemrestore.engine._grid import Block
from vemrestore.errors import UserInputError
from vemrestore.methods._base import BlockRequest, Method

if TYPE_CHECKING:
    import distributed

__all__ = ["Run", "Sink", "Source", "predict_region"]

_KEY_PREFIX = "vemrestore-block-"

Region = tuple[slice, slice, slice]


class Sink(Protocol):
    """Where a run's block tasks put their outputs."""

    def write(self, block: Block, outputs: Mapping[str, np.ndarray]) -> None:
        """Store the arrays ``outputs`` (name -> array of ``block.region``'s shape)."""


class Source:
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


class Run:
    """What every block task of one run shares, and how the tasks are executed."""

    def __init__(
        self,
        method: Method,
        source: Source,
        input_shape: tuple[int, int, int],
        outputs: tuple[str, ...],
        scheduler: str | distributed.Client | None,
        num_workers: int | None,
        progress: bool,
    ) -> None:
        self.method = method
        self.source = source
        self.input_shape = input_shape
        self.outputs = outputs
        self.output_shape = tuple(int(n) for n in method.output_shape(input_shape))
        self.scheduler = scheduler
        self.num_workers = num_workers
        self.progress = progress

    def execute(self, sink: Sink, blocks: list[Block], total: int) -> None:
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
                *shared,
                block,
                self.input_shape,
                self.outputs,
                dask_key_name=f"{_KEY_PREFIX}{block.id}-{token}",
            )
            for block in blocks
        ]
        with _progress_bar(self.progress, total, total - len(blocks)) as advance:
            if self.scheduler is None:
                # Our own pool, shut down with wait: when a block fails, the blocks still
                # running finish before the error reaches the caller (no writes after it).
                pool = ThreadPoolExecutor(self.num_workers or os.cpu_count() or 1)
                try:
                    with _BlockCallback(advance):
                        dask.compute(*tasks, scheduler="threads", pool=pool)
                finally:
                    pool.shutdown(wait=True, cancel_futures=True)
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
    source: Source,
    sink: Sink,
    block: Block,
    input_shape: tuple[int, int, int],
    outputs: tuple[str, ...],
) -> str:
    sink.write(block, predict_region(method, source, input_shape, block.region, outputs))
    return block.id


def predict_region(
    method: Method,
    source: Source,
    input_shape: tuple[int, int, int],
    output_region: Region,
    outputs: tuple[str, ...],
) -> dict[str, np.ndarray]:
    """The arrays ``outputs`` of ``output_region``, from one call of ``predict_block``."""
    in_region = tuple(method.input_region(output_region, input_shape))
    _check_input_region(method, in_region, input_shape, output_region)
    request = BlockRequest(tuple(int(s.start) for s in in_region), output_region, outputs)  # type: ignore[arg-type]
    result = method.predict_block(source.read(in_region), request)  # type: ignore[arg-type]
    if not isinstance(result, Mapping):
        raise RuntimeError(
            f"{type(method).__name__}.predict_block returned {type(result).__name__}, expected "
            f"a dict of the outputs {outputs} (a bug in the method)"
        )
    arrays = {}
    for name in outputs:
        if name not in result:
            raise RuntimeError(
                f"{type(method).__name__}.predict_block returned no {name!r} for output region "
                f"{_fmt(output_region)}, asked for {outputs} (a bug in the method)"
            )
        arrays[name] = np.asarray(result[name])
        if arrays[name].shape != request.output_shape:
            raise RuntimeError(
                f"{type(method).__name__}.predict_block returned shape {arrays[name].shape} "
                f"for {name!r} in output region {_fmt(output_region)}, expected "
                f"{request.output_shape} (a bug in the method)"
            )
    return arrays


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


def _fmt(region: Region) -> str:
    return "[" + ", ".join(f"{s.start}:{s.stop}" for s in region) + "]"
