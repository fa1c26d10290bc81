"""The dead-letter topic: read what failed, and replay it once the cause is fixed.

A dead letter's id is ``<partition>:<offset>`` in the dead-letter topic, stable for as long as
the topic retains it. Replaying writes the original key, value and headers back to the topic
the record was first consumed from, in one transaction with a *marker* record in the
dead-letter topic (header ``labelflow.replay.of``); a letter with a marker is never replayed
again, and because both writes commit together a replay interrupted at any point either
happened completely or not at all. Replays share one ``transactional.id``, so a second replay
started while one runs fences the first instead of racing it.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from confluent_kafka import OFFSET_BEGINNING, IsolationLevel, TopicPartition
from confluent_kafka.admin import OffsetSpec

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.clients import admin_client, consumer, producer
from labelflow.kafka.retry import Failure, user_headers
from labelflow.kafka.topics import Topic, topic_name
from labelflow.stage import Headers

REPLAY_OF = "labelflow.replay.of"
REPLAYED_FROM = "labelflow.replayed.from"
READ_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class DeadLetter:
    """One record in the dead-letter topic, with the failure its headers describe."""

    id: str
    key: bytes | None
    value: bytes
    headers: Headers
    failure: Failure | None
    replayed: bool = False


def read_dead_letters(settings: Settings, timeout_s: float = READ_TIMEOUT_S) -> list[DeadLetter]:
    """Every committed dead letter, oldest first per partition, flagged if already replayed."""
    topic = topic_name(Topic.DEAD_LETTER, settings)
    ends = _committed_ends(settings, topic, timeout_s)
    reader = consumer(settings, f"labelflow.dlq-reader.{uuid.uuid4().hex}")
    letters: list[DeadLetter] = []
    replayed: set[str] = set()
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
                marker = dict(headers).get(REPLAY_OF)
                if marker is not None:
                    replayed.add(marker.decode())
                elif offset < ends[partition]:
                    letters.append(
                        DeadLetter(
                            id=f"{partition}:{offset}",
                            key=message.key(),
                            value=message.value() or b"",
                            headers=headers,
                            failure=Failure.from_headers(headers),
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
        DeadLetter(d.id, d.key, d.value, d.headers, d.failure, d.id in replayed) for d in letters
    ]


def _committed_ends(settings: Settings, topic: str, timeout_s: float) -> dict[int, int]:
    """Each partition's last stable offset: reading to it sees every committed record, and
    never waits on a transaction a worker still has open."""
    admin = admin_client(settings)
    metadata = admin.list_topics(topic, timeout=timeout_s).topics[topic]
    if metadata.error is not None:
        raise LabelflowError(
            f"The dead-letter topic {topic} is not available: {metadata.error.str()}",
            hint="create the topics with: labelflow topics ensure",
        )
    wanted = {TopicPartition(topic, p): OffsetSpec.latest() for p in metadata.partitions}
    futures = admin.list_offsets(
        wanted, isolation_level=IsolationLevel.READ_COMMITTED, request_timeout=timeout_s
    )
    return {tp.partition: f.result(timeout=timeout_s).offset for tp, f in futures.items()}


def replay(
    settings: Settings, select: Callable[[DeadLetter], bool], dry_run: bool = False
) -> list[DeadLetter]:
    """Re-inject the selected, not yet replayed letters into their original topics, exactly
    once; returns them. A letter whose headers are damaged has no known origin and is skipped.

    1. take over the replay ``transactional.id`` (fencing any replay still running);
    2. read the dead letters, after that replay's commit or abort is settled;
    3. in one transaction, write each letter back to its original topic plus its marker.
    """
    dead_letter_topic = topic_name(Topic.DEAD_LETTER, settings)
    writer = producer(
        settings, {"transactional.id": f"{settings.topic_prefix}labelflow.dlq-replay"}
    )
    # 1.
    writer.init_transactions(READ_TIMEOUT_S)
    # 2.
    chosen = [
        d
        for d in read_dead_letters(settings)
        if not d.replayed and d.failure is not None and select(d)
    ]
    if dry_run or not chosen:
        return chosen
    # 3.
    writer.begin_transaction()
    for letter in chosen:
        assert letter.failure is not None
        origin = letter.id.encode()
        writer.produce(
            letter.failure.original_topic,
            key=letter.key,
            value=letter.value,
            headers=[*user_headers(letter.headers), (REPLAYED_FROM, origin)],
        )
        writer.produce(dead_letter_topic, key=letter.key, value=b"", headers=[(REPLAY_OF, origin)])
    writer.commit_transaction(READ_TIMEOUT_S)
    return chosen


def matches(
    stage: str | None = None,
    code: str | None = None,
    since: datetime | None = None,
    ids: frozenset[str] = frozenset(),
) -> Callable[[DeadLetter], bool]:
    """A filter on dead letters; every given criterion must hold."""

    def select(letter: DeadLetter) -> bool:
        f = letter.failure
        return (
            (not ids or letter.id in ids)
            and (stage is None or (f is not None and f.stage == stage))
            and (code is None or (f is not None and f.code == code))
            and (since is None or (f is not None and f.last_failure >= since))
        )

    return select


_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_since(text: str) -> datetime:
    """``2h``, ``30m``, ``7d`` (ago) or an ISO 8601 time (UTC unless it says otherwise)."""
    relative = _RELATIVE.match(text.strip())
    if relative:
        amount, unit = relative.groups()
        return datetime.now(UTC) - timedelta(**{_UNITS[unit]: int(amount)})
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise LabelflowError(
            f"--since {text!r} is neither a duration nor a time",
            hint="use e.g. 30m, 2h, 7d or 2025-01-31T12:00",
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)
