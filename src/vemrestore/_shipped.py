"""Weights shipped inside the package: each ``NAME.pt`` with its record ``NAME.json``.

The record says what the weights are (data, steps, wall time, machine,
commit, the command that retrains them) and holds their SHA-256 digest, which
is checked at every load: a damaged or replaced file is one clear error, never
a silent fallback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from vemrestore.errors import UserInputError

__all__ = ["read_record", "sha256_file", "shipped_path", "write_shipped"]


def shipped_path(name: str) -> Path:
    """Where the shipped weights ``name`` (e.g. ``"skeleton_prior.pt"``) are, in the package."""
    return Path(str(resources.files("vemrestore") / "weights" / name))


def sha256_file(path: Path) -> str:
    """SHA-256 hex digest of a file, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_record(weights: Path, *, what: str, fix: str) -> dict[str, Any]:
    """The record beside ``weights`` (same name, ``.json``), its digest checked.

    Parameters
    ----------
    weights : pathlib.Path
        The weights file.
    what : str
        What the weights are, for the messages (e.g. ``"segmenter weights"``).
    fix : str
        What the user can do, appended to every message.

    Raises
    ------
    UserInputError
        One line naming the file: weights missing, record missing or
        unreadable, or a digest that does not match.
    """
    record_path = weights.with_suffix(".json")
    if not weights.is_file():
        raise UserInputError(f"{what} not found at {weights}: {fix}")
    try:
        record = json.loads(record_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise UserInputError(
            f"{what} record {record_path} is missing or unreadable ({error}); {fix}"
        ) from None
    if not isinstance(record, dict):
        raise UserInputError(f"{what} record {record_path} is not a JSON object; {fix}")
    digest = sha256_file(weights)
    if record.get("sha256") != digest:
        raise UserInputError(
            f"{what} {weights} do not match the digest in {record_path.name} "
            f"(file {digest[:12]}, record {str(record.get('sha256'))[:12]}): the file is "
            f"damaged or was replaced; {fix}"
        )
    return record


def write_shipped(weights: Path, state: dict[str, Any], record: dict[str, Any]) -> dict[str, Any]:
    """Write ``state`` (a state dict) to ``weights`` and ``record`` plus its digest beside it.

    Both go to temporary names first. The record is renamed into place
    before the weights: a crash in between leaves a record describing weights
    still to come, which the digest check reports, never new weights under an
    old record. Returns the record as written (with ``sha256``).
    """
    import torch

    buffer = io.BytesIO()
    torch.save(state, buffer)
    record = {**record, "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    partial = weights.with_name(weights.name + ".partial")
    partial.write_bytes(buffer.getvalue())
    record_partial = weights.with_suffix(".json.partial")
    record_partial.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(record_partial, weights.with_suffix(".json"))
    os.replace(partial, weights)
    return record
