"""Drift classification: each category from the four tables, and the cap on repairs."""

from __future__ import annotations

import pyarrow as pa

from labelflow.reconcile.drift import (
    CATALOG_SCHEMA,
    HELD_SCHEMA,
    MARKER_SCHEMA,
    Bounds,
    classify,
)
from labelflow.reconcile.listing import listing_table

NOW = 1_000_000.0
BOUNDS = Bounds(now=NOW, stuck_after_s=60.0, max_repairs=2, repair_window_s=3600.0)
ACCEPTED = ["submitted", "approved"]


def catalog(*rows: tuple[str, int, bool]) -> pa.Table:
    return pa.table([list(c) for c in zip(*rows, strict=True)], schema=CATALOG_SCHEMA)


def held(*rows: tuple[str, int]) -> pa.Table:
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[], []]
    return pa.table(columns, schema=HELD_SCHEMA)


def markers(*rows: tuple[str, int, float, float, int]) -> pa.Table:
    columns = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * 5
    return pa.table(columns, schema=MARKER_SCHEMA)


def categories(found: pa.Table) -> dict[str, str]:
    return dict(zip(found["task_id"].to_pylist(), found["category"].to_pylist(), strict=True))


def test_each_kind_of_drift_is_found_once_and_nothing_in_step_is() -> None:
    listing = listing_table(
        [
            ("same", 3, "approved"),
            ("missing", 2, "submitted"),
            ("missing-deletion", 4, "deleted"),
            ("stale", 5, "approved"),
            ("fixed", 9, "approved"),
            ("held", 7, "approved"),
        ]
    )
    state = catalog(
        ("same", 3, False),
        ("stale", 4, False),
        ("fixed", 6, False),
        ("held", 6, False),
        ("orphan", 2, False),
        ("deleted-at-source-and-here", 8, True),
    )
    found = classify(
        listing,
        state,
        held(("fixed", 8), ("held", 7)),
        markers(),
        accepted=ACCEPTED,
        bounds=BOUNDS,
    )
    assert categories(found) == {
        "missing": "missing",
        "missing-deletion": "missing",
        "stale": "stale",
        "fixed": "quarantined_fixed",
        "held": "held",
        "orphan": "orphaned",
    }
    repair = dict(zip(found["task_id"].to_pylist(), found["repair"].to_pylist(), strict=True))
    assert repair == {t: t != "held" for t in repair}


def test_a_revision_the_pipeline_skips_by_design_is_not_drift_but_keeps_its_task() -> None:
    listing = listing_table([("draft", 5, "submitted"), ("broken", 3, "failed")])
    state = catalog(("draft", 2, False), ("broken", 1, False))
    found = classify(listing, state, held(), markers(), accepted=["approved"], bounds=BOUNDS)
    assert found.num_rows == 0


def test_an_accepted_revision_is_pending_within_the_bound_and_stuck_after_it() -> None:
    listing = listing_table([("young", 2, "approved"), ("old", 2, "approved")])
    state = catalog(("young", 1, False), ("old", 1, False))
    marks = markers(("young", 2, NOW - 5, NOW - 5, 1), ("old", 2, NOW - 120, NOW - 120, 1))
    found = classify(listing, state, held(), marks, accepted=ACCEPTED, bounds=BOUNDS)
    assert categories(found) == {"young": "pending", "old": "stuck"}
    assert found["repair"].to_pylist() == [True, False]  # old (again), young (in flight)


def test_a_repair_that_keeps_failing_is_stuck_and_no_longer_repeated() -> None:
    listing = listing_table([("bad", 2, "approved")])
    state = catalog(("bad", 1, False))
    marks = markers(("bad", 2, NOW - 120, NOW - 1800, 2))
    found = classify(listing, state, held(), marks, accepted=ACCEPTED, bounds=BOUNDS)
    assert categories(found) == {"bad": "stuck"}
    assert found["repair"].to_pylist() == [False]


def test_a_marker_older_than_the_revision_the_source_has_now_does_not_count() -> None:
    listing = listing_table([("edited", 5, "approved")])
    state = catalog(("edited", 1, False))
    marks = markers(("edited", 2, NOW - 120, NOW - 120, 1))
    found = classify(listing, state, held(), marks, accepted=ACCEPTED, bounds=BOUNDS)
    assert categories(found) == {"edited": "stale"}
