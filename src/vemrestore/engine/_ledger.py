"""The completion ledger that makes a blockwise run resumable.

A run in progress lives in a partial output folder. Beside the data it keeps

- ``.vemrestore/run.json``: the run's fingerprint (method, its config, the
  input's signature, block shape, output dtype, the outputs requested and
  which of them this partial holds). A later run may reuse the partial only
  if its fingerprint is identical; otherwise the refusal names what changed;
- ``.vemrestore/done/<z>_<y>_<x>``: one empty marker per finished block,
  created only after the block's write returned. A block without a marker is
  simply computed again, so a kill at any moment never leaves a block counted
  but half written;
- ``.vemrestore/pyramid.json``: the levels of the multiscale pyramid, written
  only once every block is done and the pyramid is built from them, so a
  re-run after a failed final rename does not build it again. Without it (a
  kill while building) the pyramid is built again from level 0.

A run writing several outputs keeps one partial folder, with its own ledger,
per output; a block counts as done only when it is marked in every one of
them (``finished_everywhere``), otherwise it is computed again and written to
all (an idempotent rewrite where it was already written).

When the run is complete the ledger is removed (the run record is kept by the
caller as output metadata), so the finished output holds only its data.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from vemrestore.errors import UserInputError
from vemrestore.io import describe_changes

__all__ = [
    "LEDGER_DIR",
    "check_run_record",
    "finished_blocks",
    "finished_everywhere",
    "forget_pyramid",
    "mark_finished",
    "mark_pyramid",
    "pyramid_marked",
    "read_run_record",
    "remove_ledger",
    "write_run_record",
]

LEDGER_DIR = ".vemrestore"
_RUN_FILE = "run.json"
_DONE_DIR = "done"
_PYRAMID_FILE = "pyramid.json"
# How a refusal names the entries of the fingerprint that changed.
_FINGERPRINT_LABELS = {
    "method": "the method",
    "config": "the method settings",
    "state.weights": "the model weights",
    "state.damage": "the damage map",
    "state": "the method state",
    "block_shape": "the block shape",
    "output_dtype": "the output dtype",
    "zarr_format": "the Zarr format",
    "outputs": "the outputs requested",
    "output": "the output",
}


def write_run_record(partial: Path, fingerprint: dict[str, Any], **provenance: Any) -> None:
    """Create the ledger in ``partial`` and record the run's ``fingerprint``.

    ``provenance`` entries (versions, ...) are stored beside the fingerprint
    but never compared.
    """
    ledger = Path(partial) / LEDGER_DIR
    (ledger / _DONE_DIR).mkdir(parents=True, exist_ok=True)
    record = {"fingerprint": fingerprint, **provenance}
    (ledger / _RUN_FILE).write_text(json.dumps(record, indent=2, sort_keys=True))


def read_run_record(partial: Path) -> dict[str, Any]:
    """The run record (fingerprint and provenance) stored in ``partial``.

    Raises
    ------
    UserInputError
        If ``partial`` holds no readable run record.
    """
    path = Path(partial) / LEDGER_DIR / _RUN_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        record = None
    if not isinstance(record, dict) or "fingerprint" not in record:
        raise UserInputError(
            f"{partial} exists but holds no readable run record {path} "
            f"(delete {partial} or pass overwrite=True to start afresh)"
        )
    return record


def check_run_record(partial: Path, fingerprint: dict[str, Any]) -> None:
    """Raise unless ``partial`` was started by a run with the same ``fingerprint``.

    Raises
    ------
    UserInputError
        If the partial has no run record or a different fingerprint; the
        message names the differing entries and how to start afresh.
    """
    old = read_run_record(partial)["fingerprint"]
    # Compare as JSON so tuples and lists read back alike.
    new = json.loads(json.dumps(fingerprint))
    if old != new:
        subject, details = describe_changes(old, new, _FINGERPRINT_LABELS)
        raise UserInputError(
            f"{partial} holds an unfinished run with different settings: {subject} "
            f"changed since that run ({details}); pass overwrite=True / --overwrite "
            f"to start afresh (or delete {partial})"
        )


def finished_blocks(partial: Path) -> set[str]:
    """Ids of the blocks whose marker exists in ``partial``."""
    done = Path(partial) / LEDGER_DIR / _DONE_DIR
    return {p.name for p in done.iterdir()} if done.is_dir() else set()


def finished_everywhere(partials: Iterable[Path]) -> set[str]:
    """Ids of the blocks marked finished in every one of ``partials`` (one per output)."""
    return set.intersection(*(finished_blocks(p) for p in partials))


def mark_finished(partial: Path, block_id: str) -> None:
    """Record block ``block_id`` as written (call only after its write returned)."""
    (Path(partial) / LEDGER_DIR / _DONE_DIR / block_id).touch()


def mark_pyramid(partial: Path, levels: list[Any]) -> None:
    """Record that the pyramid ``levels`` (JSON-able descriptions) is built in ``partial``."""
    path = Path(partial) / LEDGER_DIR / _PYRAMID_FILE
    path.write_text(json.dumps(levels, sort_keys=True))


def pyramid_marked(partial: Path, levels: list[Any]) -> bool:
    """Whether `mark_pyramid` recorded exactly ``levels`` in ``partial``."""
    path = Path(partial) / LEDGER_DIR / _PYRAMID_FILE
    try:
        recorded = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return bool(recorded == json.loads(json.dumps(levels, sort_keys=True)))


def forget_pyramid(partial: Path) -> None:
    """Drop the pyramid record (call before blocks are written: the pyramid must be rebuilt)."""
    (Path(partial) / LEDGER_DIR / _PYRAMID_FILE).unlink(missing_ok=True)


def remove_ledger(partial: Path) -> None:
    """Delete the ledger once the run is complete.

    The markers go first and the run record last, so a kill on the way
    leaves a resumable partial (at worst, finished blocks are recomputed).
    """
    ledger = Path(partial) / LEDGER_DIR
    shutil.rmtree(ledger / _DONE_DIR, ignore_errors=True)
    forget_pyramid(partial)
    (ledger / _RUN_FILE).unlink(missing_ok=True)
    ledger.rmdir()
