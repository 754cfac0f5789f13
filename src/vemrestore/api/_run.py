"""The run folder beside an output: what a killed command needs to resume safely.

``.NAME.run`` beside ``NAME`` holds the run's record (``run.json``: command,
input signature, config, model signatures), written before any training or
block, and the training checkpoints. Run again with the same record, a
command resumes its training and keeps the outputs and blocks it finished.
Once the run made progress (a checkpoint, a finished output or a Zarr partial
``.NAME.partial``), another record is refused until ``overwrite``, naming what
changed; the folder is removed when the command completes.

While a command runs, it holds the write lock ``.NAME.lock`` (`run_lock`):
a second process writing the same output is refused.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from vemrestore.api._lock import acquire_run_lock, release_run_lock, run_lock
from vemrestore.errors import UserInputError
from vemrestore.io import (
    Volume,
    atomic_output,
    check_output_path,
    describe_changes,
    file_signature,
    partial_path,
    source_signature,
    split_dataset_path,
    volume_signature,
)
from vemrestore.methods import RESTORED

__all__ = [
    "check_output_early",
    "file_signature",
    "finish_run",
    "input_signature",
    "output_paths",
    "run_dir",
    "run_lock",
    "sibling_path",
    "start_run",
]

logger = logging.getLogger("vemrestore.api")

# How a refusal names the entries of a run record that changed.
_RECORD_LABELS = {
    "command": "the command",
    "config": "the method settings",
    "input": "the input",
    "mask": "the mask",
    "model": "the model",
    "skeleton": "the skeleton model",
}


def sibling_path(dst: str, tag: str) -> str:
    """``DIR/NAME_tag.SUFFIX`` beside ``DIR/NAME.SUFFIX`` (an HDF5 dataset path is kept)."""
    path, inner = split_dataset_path(dst)
    stem, suffix = path.stem, path.suffix
    if stem.endswith(".ome"):  # out.ome.zarr -> out_tag.ome.zarr
        stem, suffix = stem[: -len(".ome")], ".ome" + suffix
    sibling = str(path.with_name(f"{stem}_{tag}{suffix}"))
    return sibling if inner is None else f"{sibling}:{inner}"


def output_paths(outputs: tuple[str, ...], dst: str) -> dict[str, str]:
    """Output name -> path: the restoration at ``dst``, every other output beside it."""
    return {name: dst if name == RESTORED else sibling_path(dst, name) for name in outputs}


def check_output_early(dst: str | Path, *, overwrite: bool) -> None:
    """Refuse an existing output before any training (a Zarr partial still resumes)."""
    check_output_path(split_dataset_path(dst)[0], overwrite=overwrite)


def run_dir(dst: str) -> Path:
    """Where a command keeps the state of an unfinished run: ``.NAME.run`` beside the output."""
    path = split_dataset_path(dst)[0]
    return path.with_name(f".{path.name}.run")


def input_signature(source: str | Volume) -> dict[str, Any]:
    """What a resumed run must find unchanged about an input.

    A `Volume` gives its full ``volume_signature`` (files, shape, dtype and a
    digest of sampled voxels); a path (``f.h5:/ds`` included) gives the
    ``source_signature`` of the file(s) behind it (size and modification time).
    """
    if isinstance(source, Volume):
        return volume_signature(source)
    return source_signature(source)


def start_run(
    dst: str, outputs: list[str], record: dict[str, Any], *, overwrite: bool
) -> tuple[Path, list[str]]:
    """Lock ``dst``, open its run folder and say which ``outputs`` are still to write.

    The write lock of ``dst`` is taken first (another process writing it is
    refused) and held until `finish_run`. A folder left by a run with another
    record is refused once that run made progress (a checkpoint, a finished
    output or a Zarr partial of one), naming what changed; one that made none
    (a failed start) is replaced. ``overwrite`` starts afresh.

    Returns
    -------
    folder : pathlib.Path
    pending : list of str
        The outputs not yet written, each checked to be writable.

    Raises
    ------
    UserInputError
        If another process writes ``dst``, the interrupted run differs, or an
        output exists (without ``overwrite``) or cannot be written.
    """
    acquire_run_lock(dst)
    try:
        return _open_run(dst, outputs, record, overwrite=overwrite)
    except BaseException:
        release_run_lock(dst)
        raise


def _open_run(
    dst: str, outputs: list[str], record: dict[str, Any], *, overwrite: bool
) -> tuple[Path, list[str]]:
    folder = run_dir(dst)
    record = json.loads(json.dumps(record))  # compare as stored: tuples become lists
    if folder.exists() and overwrite:
        shutil.rmtree(folder)
    finished = [p for p in outputs if split_dataset_path(p)[0].exists()]
    resuming = folder.exists() and _saved_record(folder) == record
    if folder.exists() and not resuming:
        if _made_progress(folder, outputs, finished):
            raise UserInputError(_describe_mismatch(dst, folder, record))
        shutil.rmtree(folder)  # a start that failed before any progress
    pending = []
    for path in outputs:
        if resuming and path in finished:
            logger.info("keeping %s, finished by the interrupted run", path)
            continue
        check_output_early(path, overwrite=overwrite)
        pending.append(path)
    if resuming:
        logger.info("resuming the run in %s", folder)
    else:
        folder.mkdir()
        with atomic_output(folder / "run.json") as partial:
            partial.write_text(json.dumps(record, indent=2))
    return folder, pending


def _made_progress(folder: Path, outputs: list[str], finished: list[str]) -> bool:
    """Whether a run left a checkpoint, a finished output or a resumable Zarr partial."""
    partials = (partial_path(split_dataset_path(p)[0], resume=True) for p in outputs)
    return bool(finished) or any(folder.rglob("*.pt")) or any(p.exists() for p in partials)


def _describe_mismatch(dst: str, folder: Path, record: dict[str, Any]) -> str:
    saved = _saved_record(folder)
    if not isinstance(saved, dict):
        return (
            f"{folder} holds an interrupted run of {dst} without a readable record "
            f"({folder / 'run.json'}); pass --overwrite to start afresh"
        )
    subject, details = describe_changes(saved, record, _RECORD_LABELS)
    return (
        f"{subject} changed since the interrupted run of {dst} ({details}); "
        "pass --overwrite to start afresh"
    )


def _saved_record(folder: Path) -> object:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None


def finish_run(dst: str) -> None:
    """Remove the run folder of a completed command, then its write lock (and lock file)."""
    try:
        shutil.rmtree(run_dir(dst), ignore_errors=True)
    finally:
        release_run_lock(dst)
