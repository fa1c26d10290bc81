"""commit: samples.ready → the catalog.

Upserts are keyed by (sample id, revision) and never let an older revision overwrite a newer
one, so replaying this topic from any offset converges to the same catalog. A chunk of
records is written in one database transaction; if that fails as a whole, the runner retries
its records one by one, so one bad record never holds back its neighbours. A database that
is down or locked is a transient error: the record is retried, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Sequence

from labelflow.catalog.store import Deletion
from labelflow.config import Settings
from labelflow.kafka.topics import Topic
from labelflow.model import SampleRemoval, SampleVersion
from labelflow.stage import PermanentError, Processor, Record, Result, Stage
from labelflow.stages.context import StageContext


class Committer(Processor):
    """Writes each chunk of sample versions and removals in one catalog transaction."""

    def __init__(self, settings: Settings) -> None:
        self.ctx = StageContext.open(settings, catalog=True)
        assert self.ctx.catalog is not None
        self.catalog = self.ctx.catalog

    def process(self, records: Sequence[Record]) -> list[Result]:
        writes: list[SampleVersion | Deletion] = []
        results: list[Result] = []
        for record in records:
            try:
                writes.append(_write_of(record))
                results.append([])
            except PermanentError as exc:
                results.append(exc)
        if writes:
            self.catalog.apply(writes)
        return results

    def close(self) -> None:
        self.ctx.close()


def _write_of(record: Record) -> SampleVersion | Deletion:
    event = record.event()
    if isinstance(event, SampleVersion):
        return event
    if isinstance(event, SampleRemoval):
        return Deletion(
            sample_id=event.sample_id,
            revision=event.revision,
            reason=str(event.status),
            source=event.source,
            event_id=event.event_id,
            kafka_topic=record.topic,
            kafka_partition=record.partition,
            kafka_offset=record.offset,
        )
    raise PermanentError("event.unexpected_schema", f"not a sample: {type(event).__name__}")


STAGE = Stage(name="commit", inputs=(Topic.SAMPLES_READY,), outputs=(), setup=Committer)
