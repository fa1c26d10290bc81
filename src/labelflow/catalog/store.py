"""The catalog: which version of each sample is current, and every version there ever was.

Replaying any topic from any offset must converge to the same catalog, so every write is an
upsert keyed by (sample id, revision) that never lets an older revision overwrite a newer one:

- :meth:`Catalog.upsert_version` records the version in ``sample_versions`` and makes it
  current only if its revision is newer than the sample's, or equal and the sample is live
  (a replay, or the same revision materialized again by newer code).
- :meth:`Catalog.tombstone` deletes the sample at a revision only if that revision is at
  least the current one. A tombstone for a sample never seen still writes a deleted row, so
  an older version arriving late cannot bring the sample back; a newer revision can.

At equal revisions a deletion wins over a version, whatever order they arrive in, so the
outcome depends only on the set of writes, never on their order. The "newer wins" test is
the ``WHERE`` of one ``INSERT … ON CONFLICT DO UPDATE`` statement, which both SQLite and
PostgreSQL evaluate under the row's lock: two workers racing on one sample cannot interleave
a read and a write.

Failures are classified like every other error in labelflow: :class:`CatalogUnavailable`
(``catalog.unavailable``, transient: connection dropped, database locked past the busy
timeout, serialization failure) is worth retrying; :class:`CatalogError` with
``catalog.schema`` means :meth:`Catalog.migrate` was never run.
"""

from __future__ import annotations

import builtins
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Self

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from pydantic import BaseModel
from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    create_engine,
    event,
    func,
    make_url,
    or_,
    select,
    text,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from labelflow.catalog.schema import Base
from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.model import Feature, Lineage, SampleVersion, as_utc, utcnow

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

MIGRATION_LOCK_KEY = 0x6C61_6265_6C66_6C77
"""PostgreSQL advisory lock held while migrating: without it, two stage processes starting
together both try to create the tables and one dies on "relation already exists"."""

_UNDEFINED_TABLE = "42P01"

STATES_CHUNK = 500

samples: Table = Base.metadata.tables["samples"]
versions: Table = Base.metadata.tables["sample_versions"]
tombstones: Table = Base.metadata.tables["sample_tombstones"]


class CatalogError(ClassifiedError):
    """A classified catalog failure: stable ``code``, human ``message``, ``transient`` flag."""


class CatalogUnavailable(CatalogError):
    """The database cannot be reached or is busy right now; retrying later can succeed."""

    def __init__(self, message: str) -> None:
        super().__init__("catalog.unavailable", message, transient=True)


class SampleState(BaseModel):
    """A sample's row in ``samples``: where it stands now, live or deleted."""

    sample_id: str
    revision: int
    deleted: bool
    image_hash: str | None
    mask_hash: str | None
    updated_at: datetime


class Deletion(BaseModel):
    """A deletion to write: the sample, the revision it is deleted at, why, and from where."""

    sample_id: str
    revision: int
    reason: str = "deleted"
    source: str | None = None
    event_id: str | None = None
    kafka_topic: str | None = None
    kafka_partition: int | None = None
    kafka_offset: int | None = None


class Tombstone(Deletion):
    """One recorded deletion of a sample: the :class:`Deletion` written, and when."""

    reason: str
    committed_at: datetime


class Catalog:
    """The SQL catalog at ``url`` (any SQLAlchemy URL; SQLite and PostgreSQL are tested).

    Thread-safe: each call takes its own pooled connection and transaction. ``busy_timeout_s``
    bounds how long a SQLite writer waits for another writer's lock before the call fails
    with :class:`CatalogUnavailable` (without it, concurrent writers fail at once).
    """

    def __init__(self, url: str, *, busy_timeout_s: float = 30.0) -> None:
        self.url = url
        self.engine = _create_engine(url, busy_timeout_s)
        # INSERT … ON CONFLICT of this database's dialect: what every upsert here is built on.
        self.insert = (
            postgresql.insert if self.engine.dialect.name == "postgresql" else sqlite.insert
        )
        if self.engine.dialect.name not in ("postgresql", "sqlite"):
            raise CatalogError(
                "catalog.unsupported",
                f"{self.engine.dialect.name} has no INSERT … ON CONFLICT; use SQLite or PostgreSQL",
            )

    @classmethod
    def from_settings(cls, settings: Settings) -> Self:
        return cls(settings.resolved_catalog_url)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- Schema --------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest Alembic revision (a no-op when it is there).

        Safe to call from every process at startup: the upgrade runs in one transaction under
        a lock (PostgreSQL advisory lock; SQLite ``BEGIN IMMEDIATE``), so concurrent callers
        wait for the first and then find nothing to do.
        """
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        with self.transaction(write=True) as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at; ``None`` before the first migration."""
        with self.transaction() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # --- Writes --------------------------------------------------------------------------
    def upsert_version(self, version: SampleVersion) -> bool:
        """Record ``version`` and make it current unless a newer revision (or a deletion at
        the same revision) is already there. Idempotent. Returns whether it is current now."""
        return self.apply([version])[0]

    def tombstone(
        self,
        sample_id: str,
        revision: int,
        *,
        reason: str = "deleted",
        source: str | None = None,
        event_id: str | None = None,
        kafka_topic: str | None = None,
        kafka_partition: int | None = None,
        kafka_offset: int | None = None,
    ) -> bool:
        """Delete ``sample_id`` as of ``revision`` unless a newer revision is current.

        Idempotent; the deletion is recorded in ``sample_tombstones`` either way. Returns
        whether the sample is deleted at this revision now.
        """
        deletion = Deletion(
            sample_id=sample_id,
            revision=revision,
            reason=reason,
            source=source,
            event_id=event_id,
            kafka_topic=kafka_topic,
            kafka_partition=kafka_partition,
            kafka_offset=kafka_offset,
        )
        return self.apply([deletion])[0]

    def apply(self, writes: Sequence[SampleVersion | Deletion]) -> builtins.list[bool]:
        """Every write of a batch in one database transaction, each with the rule of
        :meth:`upsert_version` or :meth:`tombstone`; one result per write, in order.

        One transaction per batch instead of per sample: on SQLite each commit is a sync of
        the write-ahead log, which cost more than the write itself. The outcome is the same
        as applying them one by one in any order, since each write's "newer wins" test runs
        against what the writes before it left.
        """
        now = utcnow()
        with self.transaction(write=True) as conn:
            return [
                self._write_version(conn, w, now)
                if isinstance(w, SampleVersion)
                else self._write_deletion(conn, w, now)
                for w in writes
            ]

    def _write_version(self, conn: Connection, version: SampleVersion, now: datetime) -> bool:
        row = _version_row(version, now)
        insert_version = self.insert(versions).values(**row)
        conn.execute(
            insert_version.on_conflict_do_update(
                index_elements=[versions.c.sample_id, versions.c.revision],
                set_={name: insert_version.excluded[name] for name in row},
            )
        )
        current = {"image_hash": version.image_hash, "mask_hash": version.mask_hash}
        return self._make_current(conn, version.sample_id, version.revision, now, current)

    def _write_deletion(self, conn: Connection, deletion: Deletion, now: datetime) -> bool:
        conn.execute(
            self.insert(tombstones)
            .values(**deletion.model_dump(), committed_at=now)
            .on_conflict_do_nothing()
        )
        return self._make_current(conn, deletion.sample_id, deletion.revision, now, None)

    # --- Reads ---------------------------------------------------------------------------
    def state(self, sample_id: str) -> SampleState | None:
        """Where ``sample_id`` stands (also when deleted); ``None`` if never seen."""
        with self.transaction() as conn:
            row = conn.execute(select(samples).where(samples.c.sample_id == sample_id)).first()
        return None if row is None else SampleState(**_aware(row._mapping))

    def states(self, sample_ids: Iterable[str]) -> builtins.list[SampleState]:
        """Where each of ``sample_ids`` stands (those never seen are left out).

        Chunked: one query per few hundred ids keeps under every database's bound-parameter
        limit while saving a round trip per sample.
        """
        ids = builtins.list(sample_ids)
        out: builtins.list[SampleState] = []
        with self.transaction() as conn:
            for start in range(0, len(ids), STATES_CHUNK):
                chunk = ids[start : start + STATES_CHUNK]
                rows = conn.execute(select(samples).where(samples.c.sample_id.in_(chunk)))
                out.extend(SampleState(**_aware(row._mapping)) for row in rows)
        return out

    def get(self, sample_id: str) -> SampleVersion | None:
        """The current version of a live sample; ``None`` if deleted or never seen."""
        found = self._current(samples.c.sample_id == sample_id, limit=1)
        return found[0] if found else None

    def list(self, *, after: str | None = None, limit: int = 1000) -> builtins.list[SampleVersion]:
        """Current versions of live samples, ordered by sample id, ``limit`` at a time.

        Keyset pagination (pass the last id as ``after``) so paging through a catalog that
        is being written to never skips or repeats a sample, as OFFSET paging would.
        """
        where = samples.c.sample_id > after if after is not None else None
        return self._current(where, limit=limit)

    def history(self, sample_id: str) -> builtins.list[SampleVersion]:
        """Every committed version of ``sample_id``, oldest revision first."""
        query = (
            select(versions).where(versions.c.sample_id == sample_id).order_by(versions.c.revision)
        )
        with self.transaction() as conn:
            return [_version(row._mapping) for row in conn.execute(query)]

    def tombstones(self, sample_id: str) -> builtins.list[Tombstone]:
        """Every recorded deletion of ``sample_id``, oldest revision first."""
        query = (
            select(tombstones)
            .where(tombstones.c.sample_id == sample_id)
            .order_by(tombstones.c.revision)
        )
        with self.transaction() as conn:
            return [Tombstone(**_aware(row._mapping)) for row in conn.execute(query)]

    def count(self, *, include_deleted: bool = False) -> int:
        """How many samples are live (or known at all, with ``include_deleted``)."""
        query = select(func.count()).select_from(samples)
        if not include_deleted:
            query = query.where(~samples.c.deleted)
        with self.transaction() as conn:
            return int(conn.execute(query).scalar_one())

    # --- Internals -----------------------------------------------------------------------
    def _make_current(
        self,
        conn: Connection,
        sample_id: str,
        revision: int,
        now: datetime,
        hashes: dict[str, str] | None,
    ) -> bool:
        """Upsert the ``samples`` row to ``revision`` — live with these artifact ``hashes``,
        or deleted when ``hashes`` is None — if that is newer than what is there.

        Newer means a higher revision, or the same revision where a deletion beats a version
        (so a tie ends the same in either order). ``RETURNING`` yields a row only when the
        insert or the update happened: exactly "this write is the current state now".
        """
        deleted = hashes is None
        new = self.insert(samples).values(
            sample_id=sample_id,
            revision=revision,
            deleted=deleted,
            image_hash=None if hashes is None else hashes["image_hash"],
            mask_hash=None if hashes is None else hashes["mask_hash"],
            updated_at=now,
        )
        tie = new.excluded.revision == samples.c.revision
        newer = or_(
            new.excluded.revision > samples.c.revision,
            tie if deleted else and_(tie, ~samples.c.deleted),
        )
        columns = ("revision", "deleted", "image_hash", "mask_hash", "updated_at")
        stmt = new.on_conflict_do_update(
            index_elements=[samples.c.sample_id],
            set_={name: new.excluded[name] for name in columns},
            where=newer,
        ).returning(samples.c.sample_id)
        return conn.execute(stmt).first() is not None

    def _current(self, where: Any, *, limit: int) -> builtins.list[SampleVersion]:
        query = (
            select(versions)
            .join(
                samples,
                and_(
                    samples.c.sample_id == versions.c.sample_id,
                    samples.c.revision == versions.c.revision,
                ),
            )
            .where(~samples.c.deleted)
            .order_by(samples.c.sample_id)
            .limit(limit)
        )
        if where is not None:
            query = query.where(where)
        with self.transaction() as conn:
            return [_version(row._mapping) for row in conn.execute(query)]

    @contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One connection in one transaction; database errors come out classified. The
        catalog's own reads and writes use it, and so do modules that keep their tables in the
        catalog database (:mod:`labelflow.sources.state`). ``write`` takes SQLite's write lock
        at the start, so the transaction cannot fail half way on a lock another writer took
        after it read."""
        try:
            with self.engine.connect() as conn:
                conn.execution_options(sqlite_begin_immediate=write)
                with conn.begin():
                    yield conn
        except (DBAPIError, PoolTimeoutError) as exc:
            classified = _classify(exc)
            if classified is None:
                raise
            raise classified from exc


def _classify(exc: DBAPIError | PoolTimeoutError) -> CatalogError | None:
    """The catalog error ``exc`` means, or ``None`` for a bug (bad SQL, violated constraint)
    that should surface as it is."""
    orig = getattr(exc, "orig", None)
    message = str(orig or exc)
    if getattr(orig, "sqlstate", None) == _UNDEFINED_TABLE or "no such table" in message:
        return CatalogError("catalog.schema", f"{message} (run the catalog migration first)")
    if isinstance(exc, OperationalError | InterfaceError | PoolTimeoutError):
        return CatalogUnavailable(message)
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return CatalogUnavailable(message)
    return None


def _create_engine(url: str, busy_timeout_s: float) -> Engine:
    parsed = make_url(url)
    if parsed.drivername == "postgresql":
        # psycopg 3 is the driver we ship; SQLAlchemy's default for this name is psycopg2.
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() != "sqlite":
        # pre_ping: a pooled connection the server dropped is replaced instead of failing once.
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(parsed)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control from the sqlite3 module (it would not BEGIN before DDL,
        # leaving a half-applied migration on a crash); ``_on_begin`` below begins instead.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        # busy_timeout first: switching to WAL takes a lock too, and under load a connection
        # that does it before waiting is allowed fails at once with "database is locked".
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        # WAL: readers never block the writer nor the writer them.
        _switch_to_wal(cursor, busy_timeout_s)
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # A writer that starts DEFERRED and later upgrades its read lock can get SQLITE_BUSY
        # without waiting at all; IMMEDIATE takes the write lock up front, under busy_timeout.
        immediate = conn.get_execution_options().get("sqlite_begin_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _switch_to_wal(cursor: Any, timeout_s: float) -> None:
    """``PRAGMA journal_mode=WAL``, retried while the database is locked.

    Seen under load with several processes opening a new catalog at once: the switch failed at
    once with "database is locked" although a busy timeout was set — SQLite does not always
    wait in its busy handler for a journal-mode change. Once any connection made the switch
    it is persistent and the pragma a no-op, so a short retry loop settles it.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _version_row(version: SampleVersion, committed_at: datetime) -> dict[str, Any]:
    lineage = version.lineage
    return {
        "sample_id": version.sample_id,
        "revision": version.revision,
        "schema_version": version.schema_version,
        "image_hash": version.image_hash,
        "mask_hash": version.mask_hash,
        "width": version.width,
        "height": version.height,
        "crs": version.crs,
        "transform": list(version.transform) if version.transform else None,
        "bounds": list(version.bounds) if version.bounds else None,
        "class_pixels": version.class_pixels,
        "features": [f.model_dump(mode="json") for f in version.features],
        "checks": [c.model_dump(mode="json") for c in version.checks],
        "source": lineage.source,
        "event_id": lineage.event_id,
        "image_uri": lineage.image_uri,
        "image_content_hash": lineage.image_content_hash,
        "code_version": lineage.code_version,
        "config_hash": lineage.config_hash,
        "kafka_topic": lineage.kafka_topic,
        "kafka_partition": lineage.kafka_partition,
        "kafka_offset": lineage.kafka_offset,
        "created_at": version.created_at,
        "committed_at": committed_at,
    }


def _version(row: Mapping[str, Any]) -> SampleVersion:
    """The inverse of :func:`_version_row` (the sample id is the lineage's task id)."""
    return SampleVersion(
        schema_version=row["schema_version"],
        sample_id=row["sample_id"],
        revision=row["revision"],
        image_hash=row["image_hash"],
        mask_hash=row["mask_hash"],
        width=row["width"],
        height=row["height"],
        crs=row["crs"],
        transform=row["transform"],
        bounds=row["bounds"],
        class_pixels=row["class_pixels"],
        features=[Feature.model_validate(f) for f in row["features"]],
        checks=row["checks"],
        lineage=Lineage(
            source=row["source"],
            task_id=row["sample_id"],
            revision=row["revision"],
            event_id=row["event_id"],
            image_uri=row["image_uri"],
            image_content_hash=row["image_content_hash"],
            code_version=row["code_version"],
            config_hash=row["config_hash"],
            kafka_topic=row["kafka_topic"],
            kafka_partition=row["kafka_partition"],
            kafka_offset=row["kafka_offset"],
        ),
        created_at=as_utc(row["created_at"]),
    )


def _aware(row: Mapping[str, Any]) -> dict[str, Any]:
    return {k: as_utc(v) if isinstance(v, datetime) else v for k, v in row.items()}
