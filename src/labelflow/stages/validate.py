"""validate: annotations.raw → annotations.valid | annotations.quarantine.

Every rule of :mod:`labelflow.quality.annotations` runs on each revision; a revision that
breaks any is quarantined with every reason at once (a person fixes them together), and the
records around it flow on. The newest revision the catalog already holds for the task makes
an older one stale, and the very revision it holds a no-op. That check is a fast path only:
the catalog's own upsert never lets an older revision win, which covers revisions that race
each other through the pipeline.

``annotations.raw`` is where outside producers write, so it accepts the canonical event both
bare and in its envelope.
"""

from __future__ import annotations

import json
import logging

from labelflow.kafka.topics import Topic
from labelflow.model import ANNOTATION_SCHEMA, AnnotationEvent, Quarantined, Reason
from labelflow.quality.annotations import Violation, parse_raw, validate_event
from labelflow.stage import Output, Record, Stage
from labelflow.stages.context import classified_errors, context

log = logging.getLogger(__name__)

RAW_EXCERPT_CHARS = 2000
"""How much of an unparseable record the quarantine keeps: enough to see what it was, not
enough to copy a multi-megabyte payload into every quarantine record."""


def unwrap(raw: bytes) -> bytes:
    """The bare event in ``raw``: the envelope's ``data`` if it is an annotation envelope."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw  # parse_raw says precisely what is wrong with it
    if isinstance(doc, dict) and doc.get("schema") == ANNOTATION_SCHEMA and "data" in doc:
        return json.dumps(doc["data"]).encode()
    return raw


def quarantine(
    record: Record,
    stage: str,
    reasons: list[Reason],
    event: AnnotationEvent | None = None,
) -> Output:
    excerpt = None if event else record.value[:RAW_EXCERPT_CHARS].decode(errors="replace")
    held = Quarantined(
        stage=stage,
        reasons=reasons,
        task_id=event.task_id if event else None,
        revision=event.revision if event else None,
        event=event,
        raw_excerpt=excerpt,
        source_topic=record.topic,
        source_partition=record.partition,
        source_offset=record.offset,
    )
    return Output(Topic.QUARANTINE, held, key=event.task_id if event else record.key)


def _reasons(violations: list[Violation]) -> list[Reason]:
    return [Reason(code=str(v.code), message=v.message, feature=v.feature) for v in violations]


def process(record: Record) -> list[Output]:
    ctx = context()
    settings = ctx.settings
    if len(record.value) > settings.validation.max_payload_bytes:
        parsed = parse_raw(record.value, settings.validation)  # reports the size, no parsing
    else:
        parsed = parse_raw(unwrap(record.value), settings.validation)
    if isinstance(parsed, list):
        return [quarantine(record, STAGE.name, _reasons(parsed))]
    event = parsed
    with classified_errors():
        state = ctx.catalog.state(event.task_id)
    violations = validate_event(
        event,
        settings.taxonomy,
        settings.validation,
        last_revision=state.revision if state else None,
    )
    if violations:
        return [quarantine(record, STAGE.name, _reasons(violations), event)]
    if state and state.revision == event.revision and state.deleted == event.removes_sample:
        # Already in the catalog exactly so: a repeated webhook or a re-ingested file.
        log.debug("revision already committed", extra={"task_id": event.task_id})
        return []
    if not event.removes_sample and event.status not in settings.accepted_statuses:
        log.info(
            "revision not accepted yet",
            extra={"task_id": event.task_id, "revision": event.revision, "status": event.status},
        )
        return []
    return [Output(Topic.VALID, event, key=event.task_id)]


STAGE = Stage(
    name="validate",
    inputs=(Topic.RAW,),
    outputs=(Topic.VALID, Topic.QUARANTINE),
    process=process,
)
