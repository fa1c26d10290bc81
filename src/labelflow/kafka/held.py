"""Topics that hold records back for a person (dead letters, quarantine): read them to their
committed end (:func:`labelflow.kafka.scan.scan`), and write chosen ones back into the
pipeline exactly once.

A held record's id is ``<partition>:<offset>`` in its topic, stable for as long as the topic
retains it. Writing one back happens in one transaction with a *marker* record in the same
held topic (an empty value, and a header naming the id it marks); a record with a marker is
never written back again, and because both writes commit together a run interrupted at any
point either happened completely or not at all. Runs on one held topic share one
``transactional.id``, so a second run started while one is going fences the first instead of
racing it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from confluent_kafka import KafkaException

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.clients import producer
from labelflow.kafka.scan import scan
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
    records: list[HeldRecord] = []
    marked: set[str] = set()
    try:
        for message in scan(settings, topic, timeout_s=timeout_s):
            headers = tuple((k, v or b"") for k, v in message.headers() or ())
            marks = dict(headers).get(marker)
            if marks is not None:
                marked.add(marks.decode())
                continue
            records.append(
                HeldRecord(
                    id=f"{message.partition()}:{message.offset()}",
                    key=message.key(),
                    value=message.value() or b"",
                    headers=headers,
                    timestamp_ms=message.timestamp()[1],
                )
            )
    except KafkaException as exc:
        raise LabelflowError(
            f"Kafka did not answer for {topic}: {exc.args[0].str()}",
            hint="check that Kafka is up (labelflow kafka status)",
        ) from None
    return [replace(r, marked=True) if r.id in marked else r for r in records]


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
