"""commit: samples.ready → the catalog.

Upserts are keyed by (sample id, revision) and never let an older revision overwrite a newer
one, so replaying this topic from any offset converges to the same catalog. A database that
is down or locked is a transient error: the record is retried, nothing is lost.
"""

from __future__ import annotations

from labelflow.kafka.topics import Topic
from labelflow.model import SampleRemoval, SampleVersion
from labelflow.stage import Output, PermanentError, Record, Stage
from labelflow.stages.context import classified_errors, context


def process(record: Record) -> list[Output]:
    event = record.event()
    catalog = context().catalog
    if not isinstance(event, SampleVersion | SampleRemoval):
        raise PermanentError("event.unexpected_schema", f"not a sample: {type(event).__name__}")
    with classified_errors():
        if isinstance(event, SampleVersion):
            catalog.upsert_version(event)
        elif isinstance(event, SampleRemoval):
            catalog.tombstone(
                event.sample_id,
                event.revision,
                reason=str(event.status),
                source=event.source,
                event_id=event.event_id,
                kafka_topic=record.topic,
                kafka_partition=record.partition,
                kafka_offset=record.offset,
            )
    return []


STAGE = Stage(name="commit", inputs=(Topic.SAMPLES_READY,), outputs=(), process=process)
