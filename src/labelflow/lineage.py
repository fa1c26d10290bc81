"""Where a sample came from: ``labelflow explain SAMPLE_ID``.

One answer gathered from the three places that hold it:

- the catalog: the sample's current state, every committed version with its lineage (source,
  event id, image reference and content hash, code version, configuration hash, the Kafka
  coordinates of the record it was made from, the quality checks that ran) and every
  deletion; whether each artifact's blob is in the blob store; the reconciler's last repair;
- Kafka: every record of the task on its way — ``annotations.raw`` (each delivery of each
  revision), ``annotations.valid``, ``samples.ready``, the retry topics (each transient
  failure), ``annotations.quarantine`` and the dead-letter topic (with their reasons).

Records of one task are keyed by its id, so only the partition the key hashes to is read
(librdkafka's default partitioner: CRC32 of the key modulo the partition count); a client
configured with another partitioner makes every partition be read.
"""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import select

from labelflow.catalog.blobs import BlobStore
from labelflow.catalog.store import Catalog, SampleState, Tombstone
from labelflow.catalog.store import versions as version_rows
from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.events import decode
from labelflow.kafka.retry import Failure
from labelflow.kafka.scan import scan, spans, with_key
from labelflow.kafka.topics import Topic, retry_topic, topic_name
from labelflow.model import AnnotationEvent, Quarantined, SampleRemoval, SampleVersion, as_utc
from labelflow.snapshots.store import SnapshotStore
from labelflow.stages.validate import unwrap


class Step(BaseModel):
    """One record of the task in one topic."""

    topic: str
    partition: int
    offset: int
    timestamp: datetime
    kind: str
    """``delivered``, ``accepted``, ``materialized``, ``removal``, ``retry``,
    ``quarantined``, ``dead-lettered`` or ``undecodable``."""
    revision: int | None = None
    status: str | None = None
    detail: dict[str, Any] = {}


class VersionFacts(BaseModel):
    """A committed version, its lineage, and whether its blobs are there."""

    version: SampleVersion
    current: bool
    blobs: dict[str, bool]


class Membership(BaseModel):
    """Whether a snapshot holds the sample, at which revision, and why not when it does not."""

    snapshot: str
    created_at: datetime
    revision: int | None
    split: str | None = None
    why_not: str | None = None


class Explanation(BaseModel):
    sample_id: str
    state: SampleState | None
    versions: list[VersionFacts]
    tombstones: list[Tombstone]
    journey: list[Step]
    repair: dict[str, Any] | None
    snapshots: list[Membership] = []


def partition_of(key: str, partitions: int, settings: Settings) -> int | None:
    """The partition librdkafka's default partitioner puts ``key`` on; None when the
    settings choose another partitioner (then every partition has to be read)."""
    if "partitioner" in settings.kafka_client_extra or not key:
        return None
    return zlib.crc32(key.encode()) % partitions


def explain(settings: Settings, catalog: Catalog, sample_id: str) -> Explanation:
    """Everything the catalog, the blob store and the topics hold about ``sample_id``."""
    state = catalog.state(sample_id)
    blobs = BlobStore.from_settings(settings)
    versions = [
        VersionFacts(
            version=v,
            current=state is not None and not state.deleted and state.revision == v.revision,
            blobs={"image": blobs.exists(v.image_hash), "mask": blobs.exists(v.mask_hash)},
        )
        for v in catalog.history(sample_id)
    ]
    return Explanation(
        sample_id=sample_id,
        state=state,
        versions=versions,
        tombstones=catalog.tombstones(sample_id),
        journey=journey(settings, sample_id),
        repair=_repair(catalog, sample_id),
        snapshots=memberships(settings, catalog, sample_id),
    )


def journey(settings: Settings, sample_id: str) -> list[Step]:
    """Every record keyed ``sample_id`` in the pipeline's topics, oldest first."""
    topics = [
        Topic.RAW,
        Topic.VALID,
        Topic.SAMPLES_READY,
        Topic.QUARANTINE,
        Topic.DEAD_LETTER,
        *(retry_topic(n) for n in range(1, len(settings.retry_delays_s) + 1)),
    ]
    steps: list[Step] = []
    for logical in topics:
        name = topic_name(logical, settings)
        count = len(spans(settings, name))
        partition = partition_of(sample_id, count, settings)
        only = None if partition is None else [partition]
        for message in scan(settings, name, with_key(sample_id), partitions=only):
            steps.append(_step(logical, message))
    return sorted(steps, key=lambda s: (s.timestamp, s.topic, s.offset))


def _step(logical: str, message: Any) -> Step:
    when = datetime.fromtimestamp(message.timestamp()[1] / 1000, UTC)
    where = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": when,
    }
    headers = message.headers() or []
    failure = Failure.from_headers(headers)
    value = message.value() or b""
    try:
        event = (
            AnnotationEvent.model_validate_json(unwrap(value))
            if logical == Topic.RAW
            else decode(value)
        )
    except (ClassifiedError, ValueError):
        return Step(**where, kind="undecodable", detail={"bytes": len(value)})
    if failure is not None:
        kind = "dead-lettered" if logical == Topic.DEAD_LETTER else "retry"
        detail = {
            "stage": failure.stage,
            "code": failure.code,
            "message": failure.message,
            "attempts": failure.attempts,
            "origin": f"{failure.original_topic}[{failure.original_partition}]"
            f"@{failure.original_offset}",
        }
        revision = getattr(event, "revision", None)
        return Step(**where, kind=kind, revision=revision, detail=detail)
    if isinstance(event, Quarantined):
        return Step(
            **where,
            kind="quarantined",
            revision=event.revision,
            detail={"stage": event.stage, "reasons": [r.code for r in event.reasons]},
        )
    if isinstance(event, AnnotationEvent):
        kind = "delivered" if logical == Topic.RAW else "accepted"
        return Step(**where, kind=kind, revision=event.revision, status=str(event.status))
    if isinstance(event, SampleVersion):
        detail = {"image_hash": event.image_hash, "mask_hash": event.mask_hash}
        return Step(**where, kind="materialized", revision=event.revision, detail=detail)
    if isinstance(event, SampleRemoval):
        return Step(**where, kind="removal", revision=event.revision, status=str(event.status))
    return Step(**where, kind=type(event).__name__)


def _repair(catalog: Catalog, sample_id: str) -> dict[str, Any] | None:
    from labelflow.reconcile.runs import repairs

    query = select(repairs).where(repairs.c.task_id == sample_id)
    with catalog.transaction() as conn:
        row = conn.execute(query).first()
    return None if row is None else dict(row._mapping)


def memberships(settings: Settings, catalog: Catalog, sample_id: str) -> list[Membership]:
    """The sample in each snapshot, oldest snapshot first: the revision a snapshot holds, or
    why it holds none — no version committed yet when it was taken, or the sample deleted
    then (a snapshot holds the live samples of its moment)."""
    committed = _committed_at(catalog, sample_id)
    deletions = [(t.committed_at, t.revision) for t in catalog.tombstones(sample_id)]
    out = []
    for snapshot in SnapshotStore.from_settings(settings).list():
        rows = snapshot.manifest(["revision", "split"], sample_id=sample_id).to_pylist()
        taken = snapshot.meta.created_at
        if rows:
            row = rows[0]
            out.append(Membership(snapshot=snapshot.name, created_at=taken,
                                  revision=row["revision"], split=row["split"]))  # fmt: skip
            continue
        before = [r for when, r in committed if when <= taken]
        deleted = [r for when, r in deletions if when <= taken]
        if not before and not deleted:
            why = "no version of it was committed yet when the snapshot was taken"
        elif deleted and max(deleted) >= max(before, default=-1):
            why = f"it was deleted (revision {max(deleted)}) when the snapshot was taken"
        else:
            why = "it was live then; the snapshot left it out"
        out.append(Membership(snapshot=snapshot.name, created_at=taken, revision=None,
                              why_not=why))  # fmt: skip
    return out


def _committed_at(catalog: Catalog, sample_id: str) -> list[tuple[datetime, int]]:
    query = select(version_rows.c.committed_at, version_rows.c.revision).where(
        version_rows.c.sample_id == sample_id
    )
    with catalog.transaction() as conn:
        rows = conn.execute(query).all()
    return [(as_utc(when), revision) for when, revision in rows]
