"""Benchmark protocols: degrade known-good data, restore, score; tables and JSON.

The protocol functions load lazily (PEP 562) so that dataset discovery, used by
the test-suite's fixtures, imports nothing heavy.
"""

from importlib import import_module

from vemrestore.bench._provenance import provenance, save_record
from vemrestore.bench._tables import markdown_table
from vemrestore.bench.datasets import data_root, real_dataset
from vemrestore.bench.phantom import em_phantom

_LAZY = {
    name: "vemrestore.bench._axial"
    for name in (
        "AxialReport",
        "AxialResult",
        "benchmark_volume",
        "format_table",
        "run_axial_benchmark",
        "save_results",
        "score_restoration",
    )
} | {
    name: "vemrestore.bench._scores"
    for name in ("DEFAULT_METRICS", "METRIC_GROUPS", "AxialScorer", "parse_metrics")
}

__all__ = [
    "data_root",
    "em_phantom",
    "markdown_table",
    "provenance",
    "real_dataset",
    "save_record",
    *_LAZY,
]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vemrestore.bench' has no attribute {name!r}")
