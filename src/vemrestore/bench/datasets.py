"""Where the real EM data live, and the named datasets the project uses."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["DATA_ENV_VAR", "QUICK_CROP", "data_root", "real_dataset", "scoring_cube"]

DATA_ENV_VAR = "VEMRESTORE_DATA"

# Relative paths under the data root; see ../shared/data/README.md.
DATASETS = {
    "medulla_sample1": "medulla_fibsem_10nm/sample1_raw.tif",
    "medulla_sample2": "medulla_fibsem_10nm/sample2_raw.tif",
    "medulla_sample2_bodies": "medulla_fibsem_10nm/sample2_bodies.tif",
    "medulla_small_train": "medulla_fibsem_small/train_raw.tif",
    "medulla_small_test": "medulla_fibsem_small/test_raw.tif",
    "isbi_train": "isbi2012_sstem/train_raw.tif",
    "isbi_test": "isbi2012_sstem/test_raw.tif",
    "isbi_membranes": "isbi2012_sstem/train_membranes.tif",
    "epfl_slices": "epfl_hippocampus_5nm_slices/train_slices.tif",
}


def data_root() -> Path | None:
    """The real-data folder: ``$VEMRESTORE_DATA``, else ``../shared/data`` next to the checkout.

    Returns None when no such folder exists.
    """
    candidates = []
    if os.environ.get(DATA_ENV_VAR):
        candidates.append(Path(os.environ[DATA_ENV_VAR]))
    else:
        repo_root = Path(__file__).resolve().parents[3]
        candidates += [repo_root.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    for path in candidates:
        if path.is_dir():
            return path
    return None


def real_dataset(name: str) -> Path | None:
    """Path of a named real dataset, or None when it is absent."""
    root = data_root()
    if root is None:
        return None
    path = root / DATASETS[name]
    return path if path.is_file() else None


#: The 96^3 crop of the scoring cube a benchmark's ``--quick`` smoke run uses.
QUICK_CROP = (slice(0, 96), slice(64, 160), slice(64, 160))


def scoring_cube(*, quick: bool = False) -> tuple[Any, Any] | None:
    """The axial benchmarks' scoring cube: medulla sample2 (float32) and its body labels.

    The labels are None when absent; the whole result is None without sample2.
    ``quick`` takes `QUICK_CROP` of both.
    """
    from vemrestore.io import open_volume

    path = real_dataset("medulla_sample2")
    if path is None:
        return None
    truth = open_volume(path).to_numpy().astype("float32")
    labels_path = real_dataset("medulla_sample2_bodies")
    labels = None if labels_path is None else open_volume(labels_path).to_numpy()
    if quick:
        truth, labels = truth[QUICK_CROP], None if labels is None else labels[QUICK_CROP]
    return truth, labels
