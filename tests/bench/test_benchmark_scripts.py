"""Every script under ``benchmarks/`` imports: a renamed library name breaks it here, not
the next time someone re-runs a benchmark."""

from __future__ import annotations

from pathlib import Path

import pytest

SCRIPTS = sorted(p.stem for p in (Path(__file__).resolve().parents[2] / "benchmarks").glob("*.py"))


def test_the_benchmarks_folder_is_found():
    assert "skelem_bench" in SCRIPTS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_and_has_a_main(name, benchmark_module):
    with benchmark_module(name) as module:
        assert callable(module.main)
        assert module.__doc__, "each benchmark says what it measures and how to reproduce it"
