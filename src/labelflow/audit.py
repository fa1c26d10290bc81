"""Accounting for every record, per stage: ``labelflow audit``.

For each stage, every committed record of its input topic is accounted for from what Kafka
and the catalog hold — never from counters a crash can reset::

    in = out + quarantined + dead-lettered + dropped + in flight + unexplained

- **in flight**: at or after the stage's committed group offset (not consumed yet), or
  consumed and waiting in a retry topic for this stage;
- **quarantined** / **dead-lettered**: a record of the quarantine / dead-letter topic names it
  by its coordinates (``source_*`` fields, ``labelflow.original.*`` headers) and this stage;
- **out**: an output of the same task and revision — ``annotations.valid`` for validate,
  ``samples.ready`` for materialize (each output accounts for one input), a row of
  ``sample_versions`` or ``sample_tombstones`` for commit;
- **dropped** (validate only, by design): a revision the catalog already holds, or one newer
  than it holds (a duplicate, a superseded revision), or a status that is not accepted;
- **unexplained**: none of these — a record lost between stages, or a catalog row removed
  behind the pipeline's back. Reported with its coordinates; any makes the audit fail.

Records older than a topic's retention are gone from Kafka and out of the audit.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any

import typer
from confluent_kafka import Message
from pydantic import BaseModel
from rich.console import Console
from sqlalchemy import select, tuple_

from labelflow.catalog.store import Catalog, tombstones, versions
from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.events import decode
from labelflow.kafka.clients import consumer
from labelflow.kafka.dlq import read_dead_letters
from labelflow.kafka.quarantine import read_quarantine
from labelflow.kafka.retry import Failure
from labelflow.kafka.scan import committed, scan
from labelflow.kafka.topics import Topic, retry_topic, topic_name
from labelflow.model import AnnotationEvent, SampleRemoval, SampleVersion
from labelflow.stage import Stage
from labelflow.stages import commit, materialize, validate
from labelflow.tables import listing

EXAMPLES = 10
"""Unexplained records listed per stage: enough to start looking, not a dump."""

Coords = tuple[str, int, int]
Identity = tuple[str, int]


class StageAudit(BaseModel):
    """One stage's balance."""

    stage: str
    input: str
    records: int
    out: int = 0
    quarantined: int = 0
    dead_lettered: int = 0
    dropped: int = 0
    in_flight: int = 0
    unexplained: int = 0
    examples: list[dict[str, Any]] = []

    @property
    def balanced(self) -> bool:
        return self.unexplained == 0


class AuditReport(BaseModel):
    stages: list[StageAudit]

    @property
    def balanced(self) -> bool:
        return all(s.balanced for s in self.stages)


@dataclass
class _Held:
    """Where quarantine, dead-letter and retry records say records of each stage went."""

    quarantined: set[tuple[str, Coords]] = field(default_factory=set)
    dead: set[tuple[str, Coords]] = field(default_factory=set)
    retrying: set[tuple[str, Coords]] = field(default_factory=set)


def _identity(message: Message, raw: bool) -> Identity | None:
    value = message.value() or b""
    try:
        event: Any = (
            AnnotationEvent.model_validate_json(validate.unwrap(value)) if raw else decode(value)
        )
    except (ClassifiedError, ValueError):
        return None
    if isinstance(event, AnnotationEvent | SampleVersion | SampleRemoval):
        sample = getattr(event, "task_id", None) or getattr(event, "sample_id", None)
        return (str(sample), event.revision)
    return None


def _status(message: Message) -> AnnotationEvent | None:
    try:
        return AnnotationEvent.model_validate_json(validate.unwrap(message.value() or b""))
    except ValueError:
        return None


def _origin(failure: Failure | None) -> tuple[str, Coords] | None:
    if failure is None:
        return None
    where = (failure.original_topic, failure.original_partition, failure.original_offset)
    return (failure.stage, where)


def _held(settings: Settings) -> _Held:
    held = _Held()
    for item in read_quarantine(settings):
        if item.held is not None:
            q = item.held
            held.quarantined.add((q.stage, (q.source_topic, q.source_partition, q.source_offset)))
    held.dead = {o for d in read_dead_letters(settings) if (o := _origin(d.failure))}
    for n in range(1, len(settings.retry_delays_s) + 1):
        for message in scan(settings, topic_name(retry_topic(n), settings)):
            origin = _origin(Failure.from_headers(message.headers() or []))
            if origin is not None:
                held.retrying.add(origin)
    return held


def _committed(
    settings: Settings, stage: Stage, topic: str, partitions: Iterable[int]
) -> dict[int, int]:
    """The stage group's committed offset per partition (0 where it committed nothing)."""
    reader = consumer(settings, settings.topic_prefix + stage.consumer_group)
    try:
        return committed(reader, topic, partitions)
    finally:
        reader.close()


def _outputs(settings: Settings, logical: str) -> Counter[Identity]:
    out: Counter[Identity] = Counter()
    for message in scan(settings, topic_name(logical, settings)):
        identity = _identity(message, raw=False)
        if identity is not None:
            out[identity] += 1
    return out


def _in_catalog(catalog: Catalog, identities: set[Identity]) -> set[Identity]:
    """Which (sample id, revision) pairs have a version or a tombstone in the catalog."""
    found: set[Identity] = set()
    pairs = sorted(identities)
    with catalog.transaction() as conn:
        for table in (versions, tombstones):
            key = tuple_(table.c.sample_id, table.c.revision)
            for start in range(0, len(pairs), 500):
                query = select(table.c.sample_id, table.c.revision).where(
                    key.in_(pairs[start : start + 500])
                )
                found.update((r[0], r[1]) for r in conn.execute(query))
    return found


def _audit_stage(
    settings: Settings,
    catalog: Catalog,
    stage: Stage,
    held: _Held,
    outputs: Counter[Identity] | None,
    since_ms: int = 0,
) -> StageAudit:
    logical = stage.inputs[0]
    topic = topic_name(logical, settings)
    raw = logical == Topic.RAW
    messages = list(scan(settings, topic, lambda m: m.timestamp()[1] >= since_ms))
    committed = _committed(settings, stage, topic, {m.partition() for m in messages})
    identities = [_identity(m, raw) for m in messages]
    in_catalog = (
        _in_catalog(catalog, {i for i in identities if i is not None}) if outputs is None else set()
    )
    states = (
        {s.sample_id: s.revision for s in catalog.states({i[0] for i in identities if i})}
        if raw
        else {}
    )
    accepted = {str(s) for s in settings.accepted_statuses}
    left = Counter(outputs or {})
    result = StageAudit(stage=stage.name, input=topic, records=len(messages))
    for message, identity in zip(messages, identities, strict=True):
        where: Coords = (message.topic(), message.partition(), message.offset())
        key = (stage.name, where)
        if message.offset() >= committed.get(message.partition(), 0):
            result.in_flight += 1
        elif key in held.quarantined:
            result.quarantined += 1
        elif key in held.dead:
            result.dead_lettered += 1
        elif outputs is not None and identity is not None and left[identity] > 0:
            left[identity] -= 1
            result.out += 1
        elif outputs is None and identity in in_catalog:
            result.out += 1
        elif key in held.retrying:
            result.in_flight += 1
        elif raw and identity is not None and _dropped(message, identity, states, accepted):
            result.dropped += 1
        else:
            result.unexplained += 1
            if len(result.examples) < EXAMPLES:
                result.examples.append(
                    {
                        "topic": where[0],
                        "partition": where[1],
                        "offset": where[2],
                        "task_id": identity[0] if identity else None,
                        "revision": identity[1] if identity else None,
                    }
                )
    return result


def _dropped(
    message: Message, identity: Identity, states: dict[str, int], accepted: set[str]
) -> bool:
    """Validate drops by design: what the catalog already holds (or holds newer), and
    statuses that are not accepted."""
    held_revision = states.get(identity[0])
    if held_revision is not None and held_revision >= identity[1]:
        return True
    event = _status(message)
    return event is not None and not event.removes_sample and str(event.status) not in accepted


def audit(settings: Settings, catalog: Catalog, since: datetime | None = None) -> AuditReport:
    """The balance of validate, materialize and commit; with ``since``, of the records that
    entered each stage's input topic since then (their outputs may come from any time)."""
    held = _held(settings)
    since_ms = int(since.timestamp() * 1000) if since else 0
    valid, ready = _outputs(settings, Topic.VALID), _outputs(settings, Topic.SAMPLES_READY)
    return AuditReport(
        stages=[
            _audit_stage(settings, catalog, validate.STAGE, held, valid, since_ms),
            _audit_stage(settings, catalog, materialize.STAGE, held, ready, since_ms),
            _audit_stage(settings, catalog, commit.STAGE, held, None, since_ms),
        ]
    )


console = Console()


def audit_command(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON, not a table.")] = False,
    since: Annotated[
        str | None,
        typer.Option(help="Only records that entered a stage since: 30m, 2h, 7d or an ISO time."),
    ] = None,
) -> None:
    """Account for every record of every stage from topic offsets and the catalog; exit 1
    when any record is unexplained (listed with its topic, partition and offset)."""
    from labelflow.kafka.dlq import parse_since

    settings: Settings = ctx.obj
    with Catalog(settings.resolved_catalog_url) as catalog:
        catalog.migrate()
        report = audit(settings, catalog, parse_since(since) if since else None)
    if as_json:
        typer.echo(report.model_dump_json(indent=2))
    else:
        table = listing(
            "stage", "in", "out", "quarantined", "dead-lettered", "dropped", "in flight",
            "unexplained",
        )  # fmt: skip
        for s in report.stages:
            mark = "[green]0[/]" if s.balanced else f"[bold red]{s.unexplained}[/]"
            table.add_row(
                s.stage, str(s.records), str(s.out), str(s.quarantined), str(s.dead_lettered),
                str(s.dropped), str(s.in_flight), mark,
            )  # fmt: skip
        console.print(table)
        for s in report.stages:
            for e in s.examples:
                console.print(
                    f"[red]unexplained[/] {s.stage}: {e['topic']}[{e['partition']}]@{e['offset']}"
                    f" task {e['task_id']} revision {e['revision']}",
                    highlight=False,
                )
    if not report.balanced:
        raise typer.Exit(1)
