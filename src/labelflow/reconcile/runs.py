"""What the reconciler reads from and records in the catalog database.

- :func:`catalog_state`: the current state (sample id, revision, deleted) of every catalog row
  a source owns, as one Arrow table, read in one query through the driver's own cursor (a
  million rows, no ORM objects);
- :func:`markers`: revisions known to have gone into the pipeline and when (the repairs this
  reconciler emitted, and a source's own claims in ``source_tasks``);
- ``reconcile_runs``: one row per run (:class:`RunReport`); ``reconcile_repairs``: the last
  repair per task, its attempts in the window.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pv
from pydantic import BaseModel, Field
from sqlalchemy import Select, Table, and_, exists, func, literal, select

from labelflow.catalog.schema import Base
from labelflow.catalog.store import Catalog, samples, tombstones, versions
from labelflow.model import as_utc
from labelflow.reconcile.drift import CATALOG_SCHEMA, MARKER_SCHEMA, REPAIRED
from labelflow.reconcile.listing import Scope
from labelflow.sources.state import tasks as source_tasks

runs: Table = Base.metadata.tables["reconcile_runs"]
repairs: Table = Base.metadata.tables["reconcile_repairs"]

UNIT_SEPARATOR = "\x1f"

FETCH_ROWS = 100_000
"""Rows per fetch from the driver: bounds the Python tuples alive at once while a million-row
catalog is turned into Arrow columns."""


class RunReport(BaseModel):
    """One reconcile run: what it compared, what it found and repaired, how it ended."""

    run_id: str
    source: str
    dry_run: bool
    outcome: str = Field(description="ok, or failed (with error)")
    started_at: datetime
    duration_s: float
    listed: int = Field(description="Tasks the source listed.")
    catalogued: int = Field(description="Catalog rows the source owns.")
    repairs: int = Field(description="Repair events emitted (0 in a dry run).")
    counts: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]
    error: str | None = None

    @property
    def drift(self) -> int:
        """Tasks that differed from the source and were owed a repair."""
        return sum(self.counts.get(c, 0) for c in REPAIRED)


def _owned(scope: Scope) -> Any:
    if scope.prefix is not None:
        # LIKE, not a key range: a source usually owns most of the catalog, and a range makes
        # SQLite walk the key index and look up every row (twice as slow as a plain scan).
        escaped = scope.prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return samples.c.sample_id.like(escaped + "%", escape="\\")
    if scope.claimed is not None:
        claimed = select(source_tasks.c.task_id).where(source_tasks.c.source == scope.claimed)
        return samples.c.sample_id.in_(claimed)
    return literal(True)


def _fetch_columns(catalog: Catalog, query: Select[Any], width: int) -> list[list[Any]]:
    """The rows of ``query`` as ``width`` Python lists, fetched through the DBAPI cursor."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    with catalog.transaction() as conn:
        compiled = query.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
        params: Any = compiled.params
        if compiled.positional:
            params = tuple(compiled.params[name] for name in compiled.positiontup or ())
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(str(compiled), params)
            while rows := cursor.fetchmany(FETCH_ROWS):
                for column, values in zip(columns, zip(*rows, strict=True), strict=True):
                    column.extend(values)
        finally:
            cursor.close()
    return columns


def catalog_state(catalog: Catalog, scope: Scope) -> pa.Table:
    """Every catalog row ``scope`` owns: ``task_id``, ``revision``, ``deleted``.

    A million rows as Python tuples cost seconds, so each database hands them over in bulk:
    SQLite as three concatenated strings (``group_concat``, split in C; the separator is a
    control character, which no task id may contain), PostgreSQL as one ``COPY`` in CSV
    parsed by Arrow; another database row by row.
    """
    where = _owned(scope)
    backend = catalog.engine.dialect.name
    if backend == "sqlite":
        return _sqlite_state(catalog, where)
    query = select(samples.c.sample_id, samples.c.revision, samples.c.deleted).where(where)
    if backend == "postgresql":
        return _copy_state(catalog, query)
    ids, revisions, deleted = _fetch_columns(catalog, query, 3)
    return pa.table([ids, revisions, pa.array(deleted).cast(pa.bool_())], schema=CATALOG_SCHEMA)


def _sqlite_state(catalog: Catalog, where: Any) -> pa.Table:
    query = select(
        func.group_concat(samples.c.sample_id, UNIT_SEPARATOR),
        func.group_concat(samples.c.revision, ","),
        func.group_concat(samples.c.deleted, ""),
    ).where(where)
    with catalog.transaction() as conn:
        ids, revisions, deleted = conn.execute(query).one()
    if ids is None:
        return CATALOG_SCHEMA.empty_table()
    return pa.table(
        [
            pa.array(ids.split(UNIT_SEPARATOR)),
            np.array(revisions.split(","), dtype=np.int64),
            np.frombuffer(deleted.encode(), dtype=np.uint8) == ord("1"),
        ],
        schema=CATALOG_SCHEMA,
    )


def _copy_state(catalog: Catalog, query: Select[Any]) -> pa.Table:
    # Literal values (escaped by SQLAlchemy): COPY takes no bound parameters.
    sql = query.compile(dialect=catalog.engine.dialect, compile_kwargs={"literal_binds": True})
    data = bytearray()
    with catalog.transaction() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        with cursor.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
            for chunk in copy:
                data += chunk
    if not data:
        return CATALOG_SCHEMA.empty_table()
    return pv.read_csv(
        pa.py_buffer(bytes(data)),
        read_options=pv.ReadOptions(column_names=CATALOG_SCHEMA.names),
        convert_options=pv.ConvertOptions(
            column_types=CATALOG_SCHEMA, true_values=["t"], false_values=["f"]
        ),
    ).cast(CATALOG_SCHEMA)


def _not_committed_since(task_id: Any, revision: Any, since: Any) -> Any:
    """No version or tombstone of that revision was written after the marker: a revision
    committed and later lost from ``samples`` is missing, not stuck in the pipeline."""
    return and_(
        *(
            ~exists().where(
                table.c.sample_id == task_id,
                table.c.revision == revision,
                table.c.committed_at >= since,
            )
            for table in (versions, tombstones)
        )
    )


def markers(catalog: Catalog, source: str, scope: Scope) -> pa.Table:
    """Revisions accepted into the pipeline and when, and not committed since: this source's
    repairs, plus the emissions the source claimed itself (``source_tasks``) if it keeps any."""
    mine = select(
        repairs.c.task_id, repairs.c.revision, repairs.c.last_at, repairs.c.first_at,
        repairs.c.attempts,
    ).where(
        repairs.c.source == source,
        _not_committed_since(repairs.c.task_id, repairs.c.revision, repairs.c.first_at),
    )  # fmt: skip
    ids, revisions, last, first, attempts = _fetch_columns(catalog, mine, 5)
    if scope.claimed is not None:
        theirs = select(
            source_tasks.c.task_id, source_tasks.c.revision, source_tasks.c.updated_at
        ).where(
            source_tasks.c.source == scope.claimed,
            ~source_tasks.c.emitted_by.like("reconcile:%"),
            _not_committed_since(
                source_tasks.c.task_id, source_tasks.c.revision, source_tasks.c.updated_at
            ),
        )
        more_ids, more_revisions, when = _fetch_columns(catalog, theirs, 3)
        ids += more_ids
        revisions += more_revisions
        last += when
        first += when
        attempts += [0] * len(when)
    return pa.table(
        [ids, revisions, [_epoch(t) for t in last], [_epoch(t) for t in first], attempts],
        schema=MARKER_SCHEMA,
    )


def _epoch(value: datetime | str) -> float:
    if isinstance(value, str):  # SQLite through the raw cursor: ISO text
        value = datetime.fromisoformat(value)
    return as_utc(value).timestamp()


def record(
    catalog: Catalog, report: RunReport, emitted: Sequence[tuple[str, int, str]], now: datetime
) -> None:
    """The run, and the repairs it emitted (``task_id, revision, category``), in one
    transaction; a task repaired again counts one more attempt (:func:`reset_window` forgets
    repairs whose window ended)."""
    insert = catalog.insert
    with catalog.transaction(write=True) as conn:
        conn.execute(runs.insert().values(**report.model_dump()))
        for start in range(0, len(emitted), 500):
            chunk = emitted[start : start + 500]
            rows = [
                {
                    "source": report.source,
                    "task_id": task_id,
                    "revision": revision,
                    "category": category,
                    "attempts": 1,
                    "first_at": now,
                    "last_at": now,
                    "run_id": report.run_id,
                }
                for task_id, revision, category in chunk
            ]
            new = insert(repairs).values(rows)
            conn.execute(
                new.on_conflict_do_update(
                    index_elements=[repairs.c.source, repairs.c.task_id],
                    set_={
                        "revision": new.excluded.revision,
                        "category": new.excluded.category,
                        "attempts": repairs.c.attempts + 1,
                        "last_at": new.excluded.last_at,
                        "run_id": new.excluded.run_id,
                    },
                )
            )


def reset_window(catalog: Catalog, source: str, older_than: datetime) -> None:
    """Forget repairs whose window ended: their next repair counts from one again."""
    with catalog.transaction(write=True) as conn:
        conn.execute(
            repairs.delete().where(repairs.c.source == source, repairs.c.first_at < older_than)
        )


def recent(catalog: Catalog, *, source: str | None = None, limit: int = 20) -> list[RunReport]:
    """The newest runs first."""
    query = select(runs).order_by(runs.c.started_at.desc()).limit(limit)
    if source is not None:
        query = query.where(runs.c.source == source)
    with catalog.transaction() as conn:
        rows = [dict(r._mapping) for r in conn.execute(query)]
    for row in rows:
        row["started_at"] = as_utc(row["started_at"])
    return [RunReport.model_validate(row) for row in rows]
