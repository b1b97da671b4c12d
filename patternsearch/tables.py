"""Plain-text tables: how the commands' typed results print themselves."""

from __future__ import annotations

from collections.abc import Sequence


def text_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Right-aligned columns under a rule, one line per row.

    Args:
        headers: Column titles.
        rows: Cells, one sequence per row, as many as ``headers``.
    """
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def optional(value: float | None, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``, or ``-`` when it is missing."""
    return "-" if value is None else format(value, spec)
