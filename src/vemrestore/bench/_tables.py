"""Markdown tables of benchmark rows (flat dicts), for scripts that print their results."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["markdown_table"]


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    *,
    ids: Sequence[tuple[str, str]],
    measures: Sequence[tuple[str, str, str]],
) -> str:
    """One line per row: identifying columns as they are, measures formatted.

    Parameters
    ----------
    rows : sequence of mapping
        Benchmark rows.
    ids : sequence of (title, key)
        Columns printed as they are (dataset, method, ...).
    measures : sequence of (title, key, format spec)
        Numeric columns; a missing or None value prints as "—".

    Examples
    --------
    >>> print(markdown_table([{"m": "cubic", "psnr": 26.333}], ids=[("method", "m")],
    ...                      measures=[("PSNR", "psnr", ".2f"), ("VI", "seg_vi", ".3f")]))
    | method | PSNR | VI |
    |---|---|---|
    | cubic | 26.33 | — |
    """
    titles = [t for t, _ in ids] + [t for t, _, _ in measures]
    lines = ["| " + " | ".join(titles) + " |", "|---" * len(titles) + "|"]
    for row in rows:
        cells = [str(row.get(key, "")) for _, key in ids]
        cells += [
            "—" if row.get(key) is None else format(row[key], spec) for _, key, spec in measures
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
