"""What sources remember between runs, kept in the catalog database.

A source that is re-read (a webhook repeated, a poll overlapping the last one, a restart)
sees the same task state again. Emitting it again would be harmless for the catalog, but a
revision that fails — an image that is missing, a brush drawn on another image size — would be
dead-lettered again on every re-read. So each emission is *claimed* first
(:meth:`SourceState.claim`): one atomic statement that records a task's revision only if it
is newer than the one recorded, and answers whether this caller may emit it.

Claims and Kafka transactions are two systems: a claim can be written and its transaction
then aborted, and the aborted record is redone. So a claim names the record that made it
(``emitted_by``: topic, partition and offset of the hint), and the *same* record may claim
the same revision again — a redo emits again; any other reader of that revision does not.

Also here: which task owns an annotation id (Label Studio's ANNOTATIONS_DELETED names only
annotations), where a listing stopped (:meth:`cursor`), and the class index every label got
(:meth:`assign_classes`: appended, never renumbered).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Table, and_, or_, select

from labelflow.catalog.schema import Base
from labelflow.catalog.store import Catalog, CatalogError
from labelflow.model import Status, utcnow

tasks: Table = Base.metadata.tables["source_tasks"]
annotations: Table = Base.metadata.tables["source_annotations"]
cursors: Table = Base.metadata.tables["source_cursors"]
classes: Table = Base.metadata.tables["taxonomy_classes"]

FAILED = "failed"
"""Status of a claim whose revision could not even be turned into an event (it was
dead-lettered with its reason instead)."""

MAX_CLASS_INDEX = 254
"""0 is background and 255 the ignore index of a mask."""


class KnownTask(BaseModel):
    """The last revision of an external task that went into the pipeline."""

    external_id: int
    task_id: str
    revision: int
    status: str
    emitted_by: str


@dataclass(frozen=True)
class ClassAssignment:
    """The outcome of :meth:`SourceState.assign_classes`."""

    classes: dict[str, int]
    """Every class ever assigned, live or removed: name → mask index."""
    added: list[str]
    removed: list[str]
    """Assigned earlier, absent from the names given now (kept, with their index)."""


class SourceState:
    """Source state in the catalog database (migrated by :meth:`Catalog.migrate`)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._insert = catalog.insert

    # --- emitted revisions ---------------------------------------------------------------
    def claim(
        self,
        source: str,
        external_id: int,
        *,
        task_id: str,
        revision: int,
        status: Status | str,
        emitted_by: str,
        annotation_ids: Iterable[int] = (),
    ) -> bool:
        """Record that ``revision`` of a task is being emitted; whether the caller may emit.

        True when the revision is newer than the one recorded (or none is), or equal and
        claimed by the same ``emitted_by`` (a redo). False otherwise: it was emitted already.
        """
        new = self._insert(tasks).values(
            source=source,
            external_id=external_id,
            task_id=task_id,
            revision=revision,
            status=str(status),
            emitted_by=emitted_by,
            updated_at=utcnow(),
        )
        wins = or_(
            new.excluded.revision > tasks.c.revision,
            and_(
                new.excluded.revision == tasks.c.revision,
                new.excluded.emitted_by == tasks.c.emitted_by,
            ),
        )
        columns = ("task_id", "revision", "status", "emitted_by", "updated_at")
        stmt = new.on_conflict_do_update(
            index_elements=[tasks.c.source, tasks.c.external_id],
            set_={name: new.excluded[name] for name in columns},
            where=wins,
        ).returning(tasks.c.external_id)
        with self.catalog.transaction(write=True) as conn:
            claimed = conn.execute(stmt).first() is not None
            ids = sorted(set(annotation_ids))
            if claimed and ids:
                rows = [
                    {"source": source, "annotation_id": a, "external_id": external_id} for a in ids
                ]
                owners = self._insert(annotations).values(rows)
                conn.execute(
                    owners.on_conflict_do_update(
                        index_elements=[annotations.c.source, annotations.c.annotation_id],
                        set_={"external_id": owners.excluded.external_id},
                    )
                )
        return claimed

    def known(self, source: str, external_id: int) -> KnownTask | None:
        """The last emitted revision of a task, or None if none ever was."""
        query = select(tasks).where(tasks.c.source == source, tasks.c.external_id == external_id)
        with self.catalog.transaction() as conn:
            row = conn.execute(query).first()
        return None if row is None else KnownTask.model_validate(dict(row._mapping))

    def known_tasks(self, source: str) -> list[KnownTask]:
        """Every task of ``source`` ever emitted, by external id."""
        query = select(tasks).where(tasks.c.source == source).order_by(tasks.c.external_id)
        with self.catalog.transaction() as conn:
            return [KnownTask.model_validate(dict(r._mapping)) for r in conn.execute(query)]

    def owners(self, source: str, annotation_ids: Sequence[int]) -> list[int]:
        """External ids of the tasks the annotations belonged to (unknown ids are left out)."""
        if not annotation_ids:
            return []
        query = (
            select(annotations.c.external_id)
            .where(
                annotations.c.source == source,
                annotations.c.annotation_id.in_(sorted(set(annotation_ids))),
            )
            .distinct()
            .order_by(annotations.c.external_id)
        )
        with self.catalog.transaction() as conn:
            return [row[0] for row in conn.execute(query)]

    # --- cursors -------------------------------------------------------------------------
    def cursor(self, source: str) -> dict[str, Any]:
        """Where listing ``source`` stopped; empty when it never started."""
        with self.catalog.transaction() as conn:
            row = conn.execute(select(cursors.c.cursor).where(cursors.c.source == source)).first()
        return dict(row[0]) if row else {}

    def save_cursor(self, source: str, cursor: dict[str, Any]) -> None:
        new = self._insert(cursors).values(source=source, cursor=cursor, updated_at=utcnow())
        stmt = new.on_conflict_do_update(
            index_elements=[cursors.c.source],
            set_={"cursor": new.excluded.cursor, "updated_at": new.excluded.updated_at},
        )
        with self.catalog.transaction(write=True) as conn:
            conn.execute(stmt)

    # --- taxonomy ------------------------------------------------------------------------
    def assign_classes(self, names: Sequence[str], origin: str) -> ClassAssignment:
        """Give each new name the next free index; keep every index given before.

        ``names`` is the full list the origin has now: names assigned earlier and missing
        from it are marked removed (their index stays reserved, so masks already made keep
        their meaning); a name that comes back is live again, with its old index.
        """
        wanted = list(dict.fromkeys(names))
        with self.catalog.transaction(write=True) as conn:
            rows = {r.name: r for r in conn.execute(select(classes))}
            added = [n for n in wanted if n not in rows]
            removed = [n for n, r in rows.items() if r.origin == origin and n not in wanted]
            free = max((r.index for r in rows.values()), default=0) + 1
            if free + len(added) - 1 > MAX_CLASS_INDEX:
                raise CatalogError(
                    "taxonomy.full",
                    f"{len(rows) + len(added)} classes do not fit mask indices 1..254",
                )
            now = utcnow()
            if added:
                conn.execute(
                    classes.insert(),
                    [
                        {"name": n, "index": free + i, "origin": origin, "removed": False,
                         "assigned_at": now}
                        for i, n in enumerate(added)
                    ],
                )  # fmt: skip
            for name in wanted:
                if name in rows and rows[name].removed:
                    conn.execute(
                        classes.update().where(classes.c.name == name).values(removed=False)
                    )
            for name in removed:
                conn.execute(classes.update().where(classes.c.name == name).values(removed=True))
            everything = {r.name: r.index for r in conn.execute(select(classes))}
        return ClassAssignment(
            classes=dict(sorted(everything.items(), key=lambda kv: kv[1])),
            added=added,
            removed=sorted(removed),
        )
