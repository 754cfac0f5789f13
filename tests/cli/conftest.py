"""Shared checks of the command-line tests."""

import pytest


def _assert_refused(result, *fragments: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment.lower() in lines[0].lower(), lines[0]


@pytest.fixture
def assert_refused():
    """A check ``(result, *fragments)``: exit 2 and exactly one ``error:`` line on
    stderr, naming every fragment (case-insensitive)."""
    return _assert_refused
