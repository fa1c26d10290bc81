"""Classifying drift between a source's listing and the catalog, set-wise.

Four Arrow tables go in — the source's listing, the catalog's current state of the source's
rows, the revisions held in quarantine, and the *markers* (a revision accepted into the
pipeline at a known time: a repair this reconciler emitted, or a source's own emission) — and
one DuckDB query joins them: a full outer join of listing and catalog on the task id finds
every task that differs, and two left joins refine why. Nothing is looked up per task, so a
million tasks cost one hash join (bench/reconcile.py measures it against a bare anti-join).

Categories, in the order they are decided:

- ``held``: the source's current revision is itself in quarantine; a person must fix it at
  the source, and re-emitting it would only quarantine it again. Not repaired.
- ``stuck``: a marker says the revision (or a newer one) went into the pipeline more than
  ``stuck_after_s`` ago, and the catalog still does not have it (dead-lettered, lost on the
  way, a repair that keeps failing). Repaired again only while the task's repairs in the
  window stay under ``max_repairs``: a failing repair is reported, never looped.
- ``pending``: a marker younger than that bound: in flight, left alone.
- ``quarantined_fixed``: a revision newer than the catalog's was quarantined, and the source
  has a newer one still (someone fixed it). Repaired.
- ``missing``: the source has the task, the catalog has no row. Repaired.
- ``stale``: the catalog's revision is older than the source's. Repaired.
- ``orphaned``: the catalog has a live sample the source no longer lists. Repaired with a
  deletion at a newer revision.

Only source rows whose status the pipeline acts on are compared (accepted statuses, and those
that remove a sample): a revision the pipeline skips by design (a status not accepted yet, a
task the source cannot convert) is not drift, though it still keeps the task from being an
orphan.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from labelflow.model import Status

REPAIRED = ("missing", "stale", "orphaned", "quarantined_fixed", "stuck")
"""Categories that are drift: the catalog differs from the source and a repair is owed."""
CATEGORIES = (*REPAIRED, "pending", "held")

CATALOG_SCHEMA = pa.schema(
    [("task_id", pa.string()), ("revision", pa.int64()), ("deleted", pa.bool_())]
)
HELD_SCHEMA = pa.schema([("task_id", pa.string()), ("revision", pa.int64())])
MARKER_SCHEMA = pa.schema(
    [
        ("task_id", pa.string()),
        ("revision", pa.int64()),
        ("last_at", pa.float64()),
        ("first_at", pa.float64()),
        ("attempts", pa.int64()),
    ]
)
"""Times are seconds since the epoch; ``attempts`` counts repairs since ``first_at``."""

REMOVING = (Status.REJECTED, Status.SKIPPED, Status.DELETED)


@dataclass(frozen=True)
class Bounds:
    """When a marker makes a task stuck, and how often a stuck task is repaired again."""

    now: float
    stuck_after_s: float
    max_repairs: int
    repair_window_s: float


_QUERY = """
WITH joined AS (
    SELECT coalesce(s.task_id, c.task_id) AS task_id,
           s.revision AS source_revision,
           c.revision AS catalog_revision,
           CASE WHEN s.task_id IS NULL THEN 'orphaned'
                WHEN c.task_id IS NULL THEN 'missing'
                ELSE 'stale' END AS base
    FROM listing s FULL OUTER JOIN catalog c ON s.task_id = c.task_id
    WHERE (s.task_id IS NULL AND NOT c.deleted)
       OR (s.task_id IS NOT NULL AND s.status IN (SELECT status FROM actionable)
           AND (c.task_id IS NULL OR s.revision > c.revision))
),
held_max AS (SELECT task_id, max(revision) AS revision FROM held GROUP BY task_id),
marker_max AS (
    SELECT task_id, max(revision) AS revision, max(last_at) AS last_at,
           min(first_at) AS first_at, CAST(sum(attempts) AS BIGINT) AS attempts
    FROM markers GROUP BY task_id
),
facts AS (
    SELECT j.*, h.revision AS held_revision, m.last_at, m.first_at, m.attempts,
           m.revision IS NOT NULL
             AND m.revision > coalesce(j.catalog_revision, -1)
             AND (j.source_revision IS NULL OR m.revision >= j.source_revision) AS accepted
    FROM joined j
    LEFT JOIN held_max h ON h.task_id = j.task_id
    LEFT JOIN marker_max m ON m.task_id = j.task_id
)
SELECT task_id, source_revision, catalog_revision,
       CASE WHEN held_revision IS NOT NULL AND source_revision IS NOT NULL
                 AND held_revision >= source_revision THEN 'held'
            WHEN accepted AND $now - last_at > $stuck_after THEN 'stuck'
            WHEN accepted THEN 'pending'
            WHEN held_revision IS NOT NULL AND source_revision IS NOT NULL
                 AND held_revision > coalesce(catalog_revision, -1) THEN 'quarantined_fixed'
            ELSE base END AS category,
       CASE WHEN accepted AND $now - first_at <= $window THEN attempts ELSE 0 END AS attempts
FROM facts
ORDER BY task_id
"""


def classify(
    listing: pa.Table,
    catalog: pa.Table,
    held: pa.Table,
    markers: pa.Table,
    *,
    accepted: Sequence[str],
    bounds: Bounds,
) -> pa.Table:
    """Every task that differs between ``listing`` and ``catalog``: ``task_id``,
    ``source_revision``, ``catalog_revision``, ``category``, ``attempts`` (repairs in the
    window so far), ``repair`` (whether to emit one now), ordered by task id."""
    actionable = pa.table({"status": sorted({*map(str, accepted), *map(str, REMOVING)})})
    con = duckdb.connect()
    try:
        for name, table in (
            ("listing", listing),
            ("catalog", catalog),
            ("held", held),
            ("markers", markers),
            ("actionable", actionable),
        ):
            con.register(name, table)
        found = con.sql(
            _QUERY,
            params={
                "now": bounds.now,
                "stuck_after": bounds.stuck_after_s,
                "window": bounds.repair_window_s,
            },
        ).to_arrow_table()
    finally:
        con.close()
    categories = found.column("category").to_pylist()
    attempts = found.column("attempts").to_pylist()
    repair = [
        c in REPAIRED and (c != "stuck" or n < bounds.max_repairs)
        for c, n in zip(categories, attempts, strict=True)
    ]
    return found.append_column("repair", pa.array(repair, pa.bool_()))
