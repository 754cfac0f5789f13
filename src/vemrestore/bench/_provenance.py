"""Where a result came from: the command, the machine and the commit."""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

__all__ = ["git_commit", "machine_info", "provenance", "save_record"]


def git_commit() -> str:
    """The checkout's HEAD commit, suffixed ``-dirty`` when files differ; "unknown" outside git."""
    repo = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def machine_info() -> dict[str, Any]:
    """Platform, CPU count, memory, key library versions and, when importable, torch's device."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    try:
        pages = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        info["memory_gib"] = round(pages / 2**30, 1)
    except (ValueError, OSError, AttributeError):  # not on every platform
        pass
    for package in ("numpy", "dask", "zarr"):
        try:
            info[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        info["torch"] = None
    return info


def provenance(argv: list[str] | None = None) -> dict[str, Any]:
    """The ``command``, ``machine`` and ``commit`` keys every saved result carries."""
    args = sys.argv if argv is None else argv
    return {"command": " ".join(args), "machine": machine_info(), "commit": git_commit()}


def _strict_json(value: Any) -> Any:
    # Strict JSON has no inf or NaN (an exact reproduction scores inf dB): write them as strings.
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value


def save_record(record: dict[str, Any], path: str | Path, *, overwrite: bool) -> Path:
    """Write a benchmark's JSON record; the file appears complete or not at all.

    Non-finite numbers are written as strings ("inf", "nan"). A missing
    folder is created; an existing file is replaced only with ``overwrite``
    (`vemrestore.io.atomic_output`): a benchmark that re-runs into its own
    results file passes True.
    """
    from vemrestore.io import atomic_output

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_strict_json(record), indent=2, allow_nan=False)
    with atomic_output(path, overwrite=overwrite) as partial:
        partial.write_text(text + "\n")
    return path
