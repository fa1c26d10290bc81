"""Reconcile at scale: N source records against an N-row catalog vs a bare DuckDB anti-join.

Builds a listing of N tasks and a SQLite catalog of N rows that differ by 1 % of each kind of
drift — missing (in the source, not in the catalog), stale (catalog revision older), orphaned
(in the catalog, not in the source), quarantined-but-fixed (a held revision between the two)
and stuck (a repair emitted long ago, still not committed) — then measures, each in a fresh
process so its peak memory is its own:

1. **reconcile**: one dry run of :class:`~labelflow.reconcile.reconciler.Reconciler` — read
   the catalog's state and the markers from SQLite, classify against the listing, record
   the run — and checks that it found exactly the injected drift;
2. **anti-join**: the two listings already in memory as Arrow tables, and DuckDB's anti-joins
   both ways plus the join for older revisions: the floor any set-wise comparison pays;
3. **anti-join + read**: the same, after reading the catalog listing out of SQLite with the
   standard library's ``sqlite3`` — what any reconciler has to do first.

Prints seconds and peak memory (RSS above what the process held before the step) for each,
and reconcile's ratio to both baselines (target: within 3x of the anti-join).

    .venv/bin/python bench/reconcile.py [--n 1000000] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.reconcile.drift import HELD_SCHEMA
from labelflow.reconcile.listing import LISTING_SCHEMA, Scope
from labelflow.reconcile.reconciler import Reconciler
from labelflow.reconcile.settings import ReconcileSettings

PREFIX = "t:"
KINDS = ("missing", "stale", "orphaned", "quarantined_fixed", "stuck")
INSERT_ROWS = 100_000


def _rss_bytes() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize()


def _peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def build(n: int, workdir: Path) -> dict[str, int]:
    """The listing (Parquet), the held revisions (Parquet) and the catalog (SQLite)."""
    share = n // 100
    ids = np.char.add(PREFIX, np.char.zfill(np.arange(n).astype(str), 9))
    revisions = np.full(n, 10, dtype=np.int64)
    status = np.full(n, "approved", dtype=object)
    slices = {kind: slice(i * share, (i + 1) * share) for i, kind in enumerate(KINDS)}
    listing = pa.table(
        [pa.array(ids), pa.array(revisions), pa.array(status)], schema=LISTING_SCHEMA
    )
    pq.write_table(listing, workdir / "listing.parquet")
    held = slices["quarantined_fixed"]
    pq.write_table(
        pa.table([pa.array(ids[held]), pa.array(revisions[held] - 1)], schema=HELD_SCHEMA),
        workdir / "held.parquet",
    )
    # The catalog: every source task but the missing ones, older revisions where drifted,
    # plus as many orphans.
    catalog_revisions = revisions.copy()
    for kind in ("stale", "quarantined_fixed", "stuck"):
        catalog_revisions[slices[kind]] = 8
    keep = np.ones(n, dtype=bool)
    keep[slices["missing"]] = False
    orphans = np.char.add(PREFIX + "orphan-", np.arange(share).astype(str))
    rows_ids = np.concatenate([ids[keep], orphans])
    rows_revisions = np.concatenate([catalog_revisions[keep], np.full(share, 3, dtype=np.int64)])
    url = f"sqlite:///{workdir / 'catalog.db'}"
    with Catalog(url) as catalog:
        catalog.migrate()
    now = datetime.now(UTC).isoformat(sep=" ")
    long_ago = datetime(2020, 1, 1, tzinfo=UTC).isoformat(sep=" ")
    with sqlite3.connect(workdir / "catalog.db") as conn:
        for start in range(0, len(rows_ids), INSERT_ROWS):
            chunk = range(start, min(start + INSERT_ROWS, len(rows_ids)))
            conn.executemany(
                "INSERT INTO samples (sample_id, revision, deleted, updated_at)"
                " VALUES (?, ?, 0, ?)",
                ((str(rows_ids[i]), int(rows_revisions[i]), now) for i in chunk),
            )
        conn.executemany(
            "INSERT INTO reconcile_repairs (source, task_id, revision, category, attempts,"
            " first_at, last_at, run_id) VALUES ('bench', ?, 10, 'stale', 1, ?, ?, 'setup')",
            ((str(task_id), long_ago, long_ago) for task_id in ids[slices["stuck"]]),
        )
    return {kind: share for kind in KINDS}


class ArrowListing:
    """A source whose listing is a table read from Parquet (its reading is not timed)."""

    name = "bench"
    scope = Scope(prefix=PREFIX)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def listing(self) -> pa.Table:
        return self.table

    def repair_events(self, drifted: object, run_id: str) -> list:
        return []


def measure_reconcile(workdir: Path) -> dict[str, object]:
    listing = pq.read_table(workdir / "listing.parquet")
    held = pq.read_table(workdir / "held.parquet")
    settings = Settings(
        catalog_url=f"sqlite:///{workdir / 'catalog.db'}",
        reconcile=ReconcileSettings(stuck_after_s=600, max_repairs=3),
    )
    with Catalog(settings.resolved_catalog_url) as catalog:
        before = _rss_bytes()
        began = time.perf_counter()
        report = Reconciler(
            settings, catalog, ArrowListing(listing), publish=lambda _e: None, held=lambda: held
        ).run(dry_run=True)
        seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "peak_bytes": _peak_bytes() - before,
        "counts": report.counts,
        "listed": report.listed,
        "catalogued": report.catalogued,
    }


ANTI_JOIN = """
SELECT
  (SELECT count(*) FROM listing s ANTI JOIN catalog c ON s.task_id = c.task_id) AS missing,
  (SELECT count(*) FROM catalog c ANTI JOIN listing s ON s.task_id = c.task_id) AS orphaned,
  (SELECT count(*) FROM listing s JOIN catalog c ON s.task_id = c.task_id
     WHERE s.revision > c.revision) AS older
"""


def _read_catalog(path: Path) -> pa.Table:
    with sqlite3.connect(path) as conn:
        rows = conn.execute("SELECT sample_id, revision, deleted FROM samples").fetchall()
    ids, revisions, deleted = zip(*rows, strict=True)
    return pa.table(
        {"task_id": pa.array(ids), "revision": pa.array(revisions), "deleted": pa.array(deleted)}
    )


def measure_anti_join(workdir: Path, read: bool) -> dict[str, object]:
    listing = pq.read_table(workdir / "listing.parquet")
    catalog = None if read else _read_catalog(workdir / "catalog.db")
    before = _rss_bytes()
    began = time.perf_counter()
    if catalog is None:
        catalog = _read_catalog(workdir / "catalog.db")
    con = duckdb.connect()
    con.register("listing", listing)
    con.register("catalog", catalog)
    [(missing, orphaned, older)] = con.sql(ANTI_JOIN).fetchall()
    con.close()
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "peak_bytes": _peak_bytes() - before,
        "counts": {"missing": missing, "orphaned": orphaned, "older": older},
    }


def _child(what: str, workdir: Path) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, __file__, "--measure", what, "--workdir", str(workdir)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise SystemExit(f"measuring {what} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="source records (and rows)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measures = {
            "reconcile": lambda: measure_reconcile(args.workdir),
            "anti-join": lambda: measure_anti_join(args.workdir, read=False),
            "anti-join+read": lambda: measure_anti_join(args.workdir, read=True),
        }
        print(json.dumps(measures[args.measure](), default=str))
        return
    with tempfile.TemporaryDirectory(prefix="labelflow-bench-reconcile-") as tmp:
        workdir = Path(tmp)
        began = time.perf_counter()
        injected = build(args.n, workdir)
        print(f"built {args.n:,} listed vs {args.n:,} catalogued in "
              f"{time.perf_counter() - began:.1f} s; 1 % of each: {', '.join(KINDS)}")  # fmt: skip
        results = {what: _child(what, workdir) for what in ("reconcile", "anti-join",
                                                            "anti-join+read")}  # fmt: skip
    found = results["reconcile"]["counts"]
    assert isinstance(found, dict)
    exact = all(found.get(kind) == n for kind, n in injected.items())
    print(f"reconcile found exactly the injected drift: {exact} {found}")
    base = results["anti-join"]
    for what, r in results.items():
        ratio = float(r["seconds"]) / float(base["seconds"])  # type: ignore[arg-type]
        print(
            f"{what:>15}: {float(r['seconds']):7.2f} s  "  # type: ignore[arg-type]
            f"peak +{int(r['peak_bytes']) / 2**20:7.0f} MiB  {ratio:5.1f}x anti-join"  # type: ignore[arg-type]
        )
    with_read = float(results["reconcile"]["seconds"]) / float(  # type: ignore[arg-type]
        results["anti-join+read"]["seconds"]  # type: ignore[arg-type]
    )
    print(f"reconcile / (anti-join + reading the catalog): {with_read:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"n": args.n, "results": results}, indent=2) + "\n")
    if not exact:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
