"""Reading a topic's committed records once, to its end, and its offsets: what reconcile,
explain and audit know of Kafka without joining any consumer group.

The end of a partition is its *last stable offset* (asked with the consumer's
``read_committed`` isolation): every committed record lies before it, and a transaction a
worker still has open never makes the scan wait.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.clients import consumer

SCAN_TIMEOUT_S = 60.0
"""Bound on one scan: a broker that stops answering must end the command with an error."""

METADATA_TIMEOUT_S = 10.0

_COORDINATOR_MOVING = {
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
}


@dataclass(frozen=True)
class Span:
    """A partition's offsets: ``low`` (oldest retained), ``high`` (last stable offset)."""

    partition: int
    low: int
    high: int


def _reader(settings: Settings) -> Consumer:
    return consumer(settings, f"labelflow.scan.{uuid.uuid4().hex}")


def spans(settings: Settings, topic: str, reader: Consumer | None = None) -> list[Span]:
    """Every partition of ``topic`` with its retained, committed offsets."""
    own = reader is None
    reader = reader or _reader(settings)
    try:
        meta = reader.list_topics(topic, timeout=METADATA_TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None:
            raise LabelflowError(
                f"The topic {topic} is not available.",
                hint="create the topics with: labelflow topics ensure",
            )
        out = []
        for partition in sorted(meta.partitions):
            tp = TopicPartition(topic, partition)
            low, high = reader.get_watermark_offsets(tp, timeout=METADATA_TIMEOUT_S)
            out.append(Span(partition, low, high))
        return out
    finally:
        if own:
            reader.close()


def committed(reader: Consumer, topic: str, partitions: Iterable[int]) -> dict[int, int]:
    """The committed offset of ``reader``'s group per partition (0 where none is).

    Asked again while the broker answers with a retriable error: right after a broker starts
    its group coordinator is still loading and says so (``NOT_COORDINATOR``)."""
    wanted = [TopicPartition(topic, p) for p in partitions]
    deadline = time.monotonic() + SCAN_TIMEOUT_S
    while True:
        try:
            found = reader.committed(wanted, timeout=METADATA_TIMEOUT_S)
            return {tp.partition: max(tp.offset, 0) for tp in found}
        except KafkaException as exc:
            error = exc.args[0]
            again = error.retriable() or error.code() in _COORDINATOR_MOVING
            if not again or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def scan(
    settings: Settings,
    topic: str,
    keep: Callable[[Message], bool] = lambda _m: True,
    timeout_s: float = SCAN_TIMEOUT_S,
    partitions: Sequence[int] | None = None,
) -> Iterator[Message]:
    """The committed records of ``topic`` (of only ``partitions`` if given) that ``keep``
    accepts, each partition's in offset order."""
    reader = _reader(settings)
    try:
        ends = {
            s.partition: s.high
            for s in spans(settings, topic, reader)
            if s.high > s.low and (partitions is None or s.partition in partitions)
        }
        if not ends:
            return
        reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends:
            if time.monotonic() > deadline:
                raise LabelflowError(f"Reading {topic} did not finish within {timeout_s:.0f} s.")
            for message in reader.consume(num_messages=1000, timeout=0.5):
                if message.error() is not None:
                    continue
                end = ends.get(message.partition())
                if end is None:
                    continue
                if message.offset() < end and keep(message):
                    yield message
                if message.offset() + 1 >= end:
                    del ends[message.partition()]
            # A partition ending in a transaction marker has no record at end - 1.
            for tp in reader.position([TopicPartition(topic, p) for p in list(ends)]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
    finally:
        reader.close()


def with_key(key: str) -> Callable[[Message], bool]:
    wanted = key.encode()
    return lambda message: message.key() == wanted
