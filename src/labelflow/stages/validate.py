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
from collections.abc import Sequence

from labelflow.catalog.store import SampleState
from labelflow.config import Settings
from labelflow.kafka.topics import Topic
from labelflow.model import ANNOTATION_SCHEMA, AnnotationEvent, Quarantined, Reason
from labelflow.quality.annotations import parse_raw, validate_event
from labelflow.stage import Output, Processor, Record, Result, Stage
from labelflow.stages.context import StageContext

log = logging.getLogger(__name__)

RAW_EXCERPT_CHARS = 2000
"""How much of an unparseable record the quarantine keeps: enough to see what it was, not
enough to copy a multi-megabyte payload into every quarantine record."""


def unwrap(raw: bytes) -> bytes:
    """The bare event in ``raw``: the envelope's ``data`` if it is an annotation envelope."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
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


class Validator(Processor):
    """Validates a chunk of revisions against the rules and the catalog's current states,
    looked up for the whole chunk in one query."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ctx = StageContext.open(settings, catalog=True)
        assert self.ctx.catalog is not None
        self.catalog = self.ctx.catalog

    def process(self, records: Sequence[Record]) -> list[Result]:
        parsed = [self._parse(record) for record in records]
        task_ids = {p.task_id for p in parsed if isinstance(p, AnnotationEvent)}
        states = {s.sample_id: s for s in self.catalog.states(task_ids)} if task_ids else {}
        return [
            self._decide(record, p, states.get(p.task_id)) if isinstance(p, AnnotationEvent) else p
            for record, p in zip(records, parsed, strict=True)
        ]

    def _parse(self, record: Record) -> AnnotationEvent | list[Output]:
        rules = self.settings.validation
        if len(record.value) > rules.max_payload_bytes:
            parsed = parse_raw(record.value, rules)  # reports the size, no parsing
        else:
            parsed = parse_raw(unwrap(record.value), rules)
        if isinstance(parsed, list):
            return [quarantine(record, STAGE.name, parsed)]
        return parsed

    def _decide(
        self, record: Record, event: AnnotationEvent, state: SampleState | None
    ) -> list[Output]:
        settings = self.settings
        reasons = validate_event(
            event,
            settings.taxonomy,
            settings.validation,
            last_revision=state.revision if state else None,
        )
        if reasons:
            return [quarantine(record, STAGE.name, reasons, event)]
        if state and state.revision == event.revision and state.deleted == event.removes_sample:
            # Already in the catalog exactly so: a repeated webhook or a re-ingested file.
            log.debug("revision already committed", extra={"task_id": event.task_id})
            return []
        if not event.removes_sample and event.status not in settings.accepted_statuses:
            log.info(
                "revision not accepted yet",
                extra={
                    "task_id": event.task_id,
                    "revision": event.revision,
                    "status": event.status,
                },
            )
            return []
        return [Output(Topic.VALID, event, key=event.task_id)]

    def close(self) -> None:
        self.ctx.close()


STAGE = Stage(
    name="validate",
    inputs=(Topic.RAW,),
    outputs=(Topic.VALID, Topic.QUARANTINE),
    setup=Validator,
)
