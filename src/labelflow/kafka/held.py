"""Topics that hold records back for a person (dead letters, quarantine): read them to their
committed end, and write chosen ones back into the pipeline exactly once.

A held record's id is ``<partition>:<offset>`` in its topic, stable for as long as the topic
retains it. Writing one back happens in one transaction with a *marker* record in the same
held topic (an empty value, and a header naming the id it marks); a record with a marker is
never written back again, and because both writes commit together a run interrupted at any
point either happened completely or not at all. Runs on one held topic share one
``transactional.id``, so a second run started while one is going fences the first instead of
racing it.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import OFFSET_BEGINNING, IsolationLevel, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.clients import admin_client, consumer, producer
from labelflow.stage import Headers

READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class HeldRecord:
    """One record of a held topic (markers excluded); ``marked``: a marker names it."""

    id: str
    key: bytes | None
    value: bytes
    headers: Headers
    timestamp_ms: int
    marked: bool = False


@dataclass(frozen=True)
class WriteBack:
    """Where a held record goes back to, and as what."""

    record: HeldRecord
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers


def read_held(
    settings: Settings, topic: str, marker: str, timeout_s: float = READ_TIMEOUT_S
) -> list[HeldRecord]:
    """Every committed record of ``topic`` (a full name), oldest first per partition,
    flagged when a marker record (header ``marker``) names it."""
    try:
        ends = _committed_ends(settings, topic, timeout_s)
    except KafkaException as exc:
        raise LabelflowError(
            f"Kafka did not answer for {topic}: {exc.args[0].str()}",
            hint="check that Kafka is up (labelflow kafka status)",
        ) from None
    reader = consumer(settings, f"labelflow.held-reader.{uuid.uuid4().hex}")
    records: list[HeldRecord] = []
    marked: set[str] = set()
    try:
        pending = {p for p, end in ends.items() if end > 0}
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in pending])
        deadline = datetime.now(UTC) + timedelta(seconds=timeout_s)
        while pending:
            if datetime.now(UTC) > deadline:
                raise LabelflowError(f"Reading {topic} did not finish within {timeout_s:.0f} s.")
            for message in reader.consume(num_messages=500, timeout=0.5):
                if message.error() is not None:
                    continue
                partition, offset = message.partition(), message.offset()
                headers = tuple((k, v or b"") for k, v in message.headers() or ())
                marks = dict(headers).get(marker)
                if marks is not None:
                    marked.add(marks.decode())
                elif offset < ends[partition]:
                    records.append(
                        HeldRecord(
                            id=f"{partition}:{offset}",
                            key=message.key(),
                            value=message.value() or b"",
                            headers=headers,
                            timestamp_ms=message.timestamp()[1],
                        )
                    )
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
            for tp in reader.position([TopicPartition(topic, p) for p in list(pending)]):
                if tp.offset >= ends[tp.partition]:
                    pending.discard(tp.partition)  # the end is a transaction marker
    finally:
        reader.close()
    return [
        HeldRecord(r.id, r.key, r.value, r.headers, r.timestamp_ms, r.id in marked) for r in records
    ]


def _committed_ends(settings: Settings, topic: str, timeout_s: float) -> dict[int, int]:
    """Each partition's last stable offset: reading to it sees every committed record, and
    never waits on a transaction a worker still has open."""
    admin = admin_client(settings)
    metadata = admin.list_topics(topic, timeout=timeout_s).topics[topic]
    if metadata.error is not None:
        raise LabelflowError(
            f"The topic {topic} is not available: {metadata.error.str()}",
            hint="create the topics with: labelflow topics ensure",
        )
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in metadata.partitions}
    futures = admin.list_offsets(
        wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout_s
    )
    return {tp.partition: f.result(timeout=timeout_s).offset for tp, f in futures.items()}


def write_back(
    settings: Settings,
    topic: str,
    marker: str,
    choose: Callable[[list[HeldRecord]], Sequence[WriteBack]],
    dry_run: bool = False,
) -> list[WriteBack]:
    """Write the records ``choose`` picks from ``topic`` back into the pipeline, exactly
    once; returns them. ``choose`` sees every record, already written back ones flagged.

    1. take over the ``transactional.id`` of this held topic (fencing a run still going);
    2. read the held records, after that run's commit or abort is settled;
    3. in one transaction, write each chosen record back plus its marker.
    """
    writer = producer(settings, {"transactional.id": f"labelflow.write-back.{topic}"})
    # 1.
    writer.init_transactions(READ_TIMEOUT_S)
    # 2.
    chosen = [w for w in choose(read_held(settings, topic, marker)) if not w.record.marked]
    if dry_run or not chosen:
        return chosen
    # 3.
    writer.begin_transaction()
    for item in chosen:
        writer.produce(item.topic, key=item.key, value=item.value, headers=list(item.headers))
        writer.produce(
            topic, key=item.record.key, value=b"", headers=[(marker, item.record.id.encode())]
        )
    writer.commit_transaction(READ_TIMEOUT_S)
    return chosen
