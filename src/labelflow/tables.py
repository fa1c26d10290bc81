"""List views for a terminal: every value shown whole, in any width.

Rich shrinks a table that is wider than the terminal by cutting cells with an ellipsis, so an
id or an error code in an 80-column window became ``labelflow.s…``, useless to copy into the
next command. Here no column is cut: long values fold onto more lines, the borders take no
room, and times are short. ``--json`` gives the same rows, complete, to scripts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Column, Table

MIN_FREE_WIDTH = 10
"""The narrowest a folding column gets (a date): narrower, it is more breaks than text."""


def listing(*columns: str) -> Table:
    """A table whose cells fold instead of being cut, with light borders."""
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in columns:
        table.add_column(name, overflow="fold")
    return table


def fit(table: Table, width: int, *free: str) -> Table:
    """Give every column but the ``free`` ones the width of its longest line, so ids, codes
    and times stay whole, and share what is left among the ``free`` ones (task ids, origins),
    which fold. Call it once the rows are in. Where even that does not fit, nothing is fixed
    and every column folds as Rich shares the width out."""

    def natural(column: Column) -> int:
        cells = [str(column.header), *(str(cell) for cell in column.cells)]
        return max(len(line) for cell in cells for line in cell.splitlines() or [""])

    widths = {str(column.header): natural(column) for column in table.columns}
    # Padding: one space each side of every column.
    room = width - 2 * len(widths) - sum(w for n, w in widths.items() if n not in free)
    floor = {name: min(widths[name], MIN_FREE_WIDTH) for name in free}
    spare = room - sum(floor.values())
    if spare < 0:
        return table
    wants = {name: widths[name] - floor[name] for name in free}
    total = sum(wants.values())
    for name in free:
        extra = wants[name] if total <= spare else spare * wants[name] // total
        widths[name] = floor[name] + extra
    for column in table.columns:
        column.width = widths[str(column.header)]
    return table


def short_time(when: datetime) -> str:
    """``2025-03-01 10:05`` in UTC: enough to tell failures apart in a list."""
    return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def print_json(console: Console, rows: Iterable[dict[str, Any]] | dict[str, Any]) -> None:
    """Rows (or one object) as JSON on stdout, without Rich's wrapping or colours."""
    value: Sequence[Any] | dict[str, Any] = rows if isinstance(rows, dict) else list(rows)
    console.print(
        json.dumps(value, indent=2, default=str, ensure_ascii=False),
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
