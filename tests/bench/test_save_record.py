"""Benchmark records: strict JSON, complete or absent, never over a file unasked."""

from __future__ import annotations

import json

import pytest

from vemrestore.bench import save_record
from vemrestore.errors import UserInputError


def test_non_finite_numbers_become_strings_at_any_depth(tmp_path):
    record = {"psnr": float("inf"), "rows": [{"rho": float("nan")}, (1.5, float("-inf"))]}
    saved = save_record(record, tmp_path / "new" / "r.json", overwrite=False)
    assert json.loads(saved.read_text()) == {
        "psnr": "inf",
        "rows": [{"rho": "nan"}, [1.5, "-inf"]],
    }


def test_an_existing_file_is_replaced_only_when_asked(tmp_path):
    path = tmp_path / "r.json"
    path.write_text("keep")
    with pytest.raises(UserInputError):
        save_record({"a": 1}, path, overwrite=False)
    assert path.read_text() == "keep"
    save_record({"a": 1}, path, overwrite=True)
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no partial file left
