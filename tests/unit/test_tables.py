"""List views fit the terminal: no line wider than it, nothing cut, ids and codes whole where
there is room for them."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from labelflow.tables import fit, listing

ROWS = [
    ("1:0", "materialize", "imagery.unreachable", "4", "p.annotations.valid[3]@123456", "yes"),
    ("11:12345", "validate", "class.unknown\ngeometry.self_intersection", "1", "x" * 70, ""),
]


def _render(width: int) -> str:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    table = listing("id", "stage", "code", "tries", "origin", "replayed")
    for row in ROWS:
        table.add_row(*row)
    console.print(fit(table, width, "stage", "origin"))
    return console.file.getvalue()  # type: ignore[attr-defined]


@pytest.mark.parametrize("width", [40, 60, 80, 200])
def test_a_listing_never_exceeds_the_terminal_nor_cuts_a_value(width: int) -> None:
    text = _render(width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "…" not in text
    assert text.count("x") == 70  # folded, not cut


def test_ids_and_codes_stay_whole_in_80_columns() -> None:
    text = _render(80)
    for whole in ("11:12345", "imagery.unreachable", "geometry.self_intersection"):
        assert whole in text
