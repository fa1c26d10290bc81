"""The quarantine topic: revisions held back with their reasons, and re-running them.

Three stages quarantine: ``ingest`` (a unit of a file that could not become an event at all:
it carries the start of its JSON, no event), ``validate`` (an event that broke a rule) and
``materialize`` (a sample that failed its checks). An id is ``<partition>:<offset>`` in the
quarantine topic.

Re-running writes a held *event* back to ``annotations.raw`` (after the cause is fixed: the
taxonomy, the rules, the imagery), exactly once per record (marker header
``labelflow.rerun.of``; see :mod:`labelflow.kafka.held`). A record held without an event (an
ingest refusal, an unparseable record) has nothing to re-run: fix the source and ingest it
again.

Ingest refusals carry a fingerprint header (:data:`INGEST_FINGERPRINT`) that depends only on
the refused unit's content: ingest reads the fingerprints already here and does not
quarantine the same bad task again when the same file is ingested twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.events import decode, encode
from labelflow.kafka.held import READ_TIMEOUT_S, HeldRecord, WriteBack, read_held, write_back
from labelflow.kafka.topics import Topic, topic_name
from labelflow.model import Quarantined

RERUN_OF = "labelflow.rerun.of"
RERUN_FROM = "labelflow.rerun.from"
INGEST_FINGERPRINT = "labelflow.ingest.fingerprint"


@dataclass(frozen=True)
class HeldRevision:
    """One quarantined record: what was held (None if its value cannot be decoded)."""

    id: str
    key: bytes | None
    held: Quarantined | None
    fingerprint: str | None
    rerun: bool
    timestamp_ms: int

    @classmethod
    def of(cls, record: HeldRecord) -> HeldRevision:
        try:
            held = decode(record.value)
        except ClassifiedError:
            held = None
        fingerprint = dict(record.headers).get(INGEST_FINGERPRINT)
        return cls(
            id=record.id,
            key=record.key,
            held=held if isinstance(held, Quarantined) else None,
            fingerprint=fingerprint.decode(errors="replace") if fingerprint else None,
            rerun=record.marked,
            timestamp_ms=record.timestamp_ms,
        )

    @property
    def codes(self) -> list[str]:
        return [r.code for r in self.held.reasons] if self.held else ["(undecodable)"]

    @property
    def when(self) -> datetime:
        if self.held is not None:
            return self.held.quarantined_at
        return datetime.fromtimestamp(self.timestamp_ms / 1000, UTC)

    @property
    def can_rerun(self) -> bool:
        return self.held is not None and self.held.event is not None and not self.rerun


def read_quarantine(settings: Settings, timeout_s: float = READ_TIMEOUT_S) -> list[HeldRevision]:
    """Every committed quarantine record, oldest first per partition, flagged if re-run."""
    topic = topic_name(Topic.QUARANTINE, settings)
    return [HeldRevision.of(r) for r in read_held(settings, topic, RERUN_OF, timeout_s)]


def rerun(
    settings: Settings, select: Callable[[HeldRevision], bool], dry_run: bool = False
) -> list[HeldRevision]:
    """Write the held events of the selected records back to ``annotations.raw``, exactly
    once; returns them. Records without an event are never selected."""
    raw = topic_name(Topic.RAW, settings)

    def choose(records: list[HeldRecord]) -> list[WriteBack]:
        out = []
        for record in records:
            revision = HeldRevision.of(record)
            if not revision.can_rerun or not select(revision):
                continue
            assert revision.held is not None and revision.held.event is not None
            event = revision.held.event
            headers = ((RERUN_FROM, record.id.encode()),)
            out.append(WriteBack(record, raw, event.task_id.encode(), encode(event), headers))
        return out

    topic = topic_name(Topic.QUARANTINE, settings)
    return [
        HeldRevision.of(w.record) for w in write_back(settings, topic, RERUN_OF, choose, dry_run)
    ]


def matches(
    stage: str | None = None,
    code: str | None = None,
    task: str | None = None,
    since: datetime | None = None,
    ids: frozenset[str] = frozenset(),
) -> Callable[[HeldRevision], bool]:
    """A filter on quarantine records; every given criterion must hold."""

    def select(item: HeldRevision) -> bool:
        held = item.held
        return (
            (not ids or item.id in ids)
            and (stage is None or (held is not None and held.stage == stage))
            and (code is None or code in item.codes)
            and (task is None or (held is not None and held.task_id == task))
            and (since is None or item.when >= since)
        )

    return select
