"""The run folder beside an output: what a killed command needs to resume safely.

``.NAME.run`` beside ``NAME`` holds the run's record (``run.json``: command,
input signature, config, model signatures) and the training checkpoints. Run
again with the same record, a command resumes its training and keeps the
outputs it finished; another record is refused until ``overwrite``; the
folder is removed when the command completes.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from vemrestore.errors import UserInputError
from vemrestore.io import atomic_output, check_output_path, split_dataset_path
from vemrestore.methods import RESTORED

__all__ = [
    "check_output_early",
    "file_signature",
    "finish_run",
    "input_signature",
    "output_paths",
    "run_dir",
    "sibling_path",
    "start_run",
]

logger = logging.getLogger("vemrestore.api")


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


def file_signature(path: str | Path | None) -> list | None:
    """Absolute path, size and modification time: tells an edited file apart."""
    if path is None:
        return None
    path = Path(path)
    stat = path.stat() if path.exists() else None
    return [str(path.resolve()), stat and stat.st_size, stat and stat.st_mtime_ns]


def input_signature(src: str) -> list:
    """``file_signature`` of an input, with its inner dataset path (``f.h5:/ds``)."""
    path, inner = split_dataset_path(src)
    return [*file_signature(path), inner]  # type: ignore[misc]


def start_run(
    dst: str, outputs: list[str], record: dict[str, Any], *, overwrite: bool
) -> tuple[Path, list[str]]:
    """Open the run folder of ``dst`` and say which ``outputs`` are still to write.

    A folder left by another run is refused, unless that run made no
    progress (no checkpoint, no output: a failed start), which is replaced.
    ``overwrite`` starts afresh. ``finish_run`` removes the folder.

    Returns
    -------
    folder : pathlib.Path
    pending : list of str
        The outputs not yet written, each checked to be writable.
    """
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


def _saved_record(folder: Path) -> object:
    try:
        return json.loads((folder / "run.json").read_text())
    except (OSError, ValueError):
        return None


def finish_run(dst: str) -> None:
    """Remove the run folder of a completed command."""
    shutil.rmtree(run_dir(dst), ignore_errors=True)
