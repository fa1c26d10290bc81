"""Retry topics and dead-lettering: where a failed record goes next, and what it carries.

A record that fails transiently is written, unchanged, to retry topic ``labelflow.retry.N``
(``N`` = how many times it failed) with headers saying which stage failed it, why, where it
came from and when it is due. Its partition moves on at once: one failing record never blocks
the records behind it. The stage's own workers also read the retry topics (their group skips
other stages' records) and hand the record back to the stage when it is due; that happens in
the same transactions as everything else, so a retry is exactly-once too.

After the last configured delay — or at once for a permanent error —
the record goes to the dead-letter topic with the same headers, where ``labelflow dlq`` shows
and replays it.

Ordering: a retried record is overtaken by later records of the same key. Stages downstream
are revision-aware (an older revision never overwrites a newer one), so this is safe; see
docs/guarantees.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.kafka.topics import Topic, retry_topic, topic_name
from labelflow.stage import Headers, Record

PREFIX = "labelflow."
STAGE = "labelflow.stage"
ERROR_TYPE = "labelflow.error.type"
ERROR_CODE = "labelflow.error.code"
ERROR_MESSAGE = "labelflow.error.message"
ATTEMPTS = "labelflow.attempts"
ORIGINAL_TOPIC = "labelflow.original.topic"
ORIGINAL_PARTITION = "labelflow.original.partition"
ORIGINAL_OFFSET = "labelflow.original.offset"
FIRST_FAILURE = "labelflow.failure.first"
LAST_FAILURE = "labelflow.failure.last"
DUE_MS = "labelflow.retry.due-ms"

MAX_MESSAGE_CHARS = 2000
"""Error messages are cut here: a stack-trace-sized header on every record would bloat the
retry and dead-letter topics and the DLQ listing."""


@dataclass(frozen=True)
class Failure:
    """Why and where a record failed, as carried in retry and dead-letter headers."""

    stage: str
    error_type: str
    code: str
    message: str
    attempts: int
    original_topic: str
    original_partition: int
    original_offset: int
    first_failure: datetime
    last_failure: datetime

    def headers(self) -> list[tuple[str, bytes]]:
        fields = {
            STAGE: self.stage,
            ERROR_TYPE: self.error_type,
            ERROR_CODE: self.code,
            ERROR_MESSAGE: self.message[:MAX_MESSAGE_CHARS],
            ATTEMPTS: str(self.attempts),
            ORIGINAL_TOPIC: self.original_topic,
            ORIGINAL_PARTITION: str(self.original_partition),
            ORIGINAL_OFFSET: str(self.original_offset),
            FIRST_FAILURE: self.first_failure.isoformat(),
            LAST_FAILURE: self.last_failure.isoformat(),
        }
        return [(k, v.encode()) for k, v in fields.items()]

    @classmethod
    def from_headers(cls, headers: Iterable[tuple[str, bytes | None]]) -> Failure | None:
        """The failure described by ``headers``; None when they describe none (or are
        damaged: the runner then dead-letters it as ``retry.headers_damaged``)."""
        h = {k: (v or b"").decode(errors="replace") for k, v in headers if k.startswith(PREFIX)}
        try:
            return cls(
                stage=h[STAGE],
                error_type=h[ERROR_TYPE],
                code=h[ERROR_CODE],
                message=h[ERROR_MESSAGE],
                attempts=int(h[ATTEMPTS]),
                original_topic=h[ORIGINAL_TOPIC],
                original_partition=int(h[ORIGINAL_PARTITION]),
                original_offset=int(h[ORIGINAL_OFFSET]),
                first_failure=datetime.fromisoformat(h[FIRST_FAILURE]),
                last_failure=datetime.fromisoformat(h[LAST_FAILURE]),
            )
        except (KeyError, ValueError):
            return None


def user_headers(headers: Iterable[tuple[str, bytes | None]]) -> Headers:
    """The record's own headers, without the ones labelflow adds on its way."""
    return tuple((k, v or b"") for k, v in headers if not k.startswith(PREFIX))


def due_ms(headers: Iterable[tuple[str, bytes | None]]) -> int | None:
    """When a retry record is due (epoch ms); None when the header is missing or damaged
    (every retry record the runner writes carries one)."""
    for key, value in headers:
        if key == DUE_MS:
            try:
                return int(value or b"")
            except ValueError:
                return None
    return None


def failing_stage(headers: Iterable[tuple[str, bytes | None]]) -> str | None:
    """The stage a retry or dead-letter record failed in, from its headers alone.

    Read on its own so that a record whose other headers are damaged is still attributed:
    its stage dead-letters it (``retry.headers_damaged``) instead of every stage skipping
    it. A record with no stage header at all was not written by a labelflow runner and
    belongs to no stage.
    """
    for key, value in headers:
        if key == STAGE and value:
            return value.decode(errors="replace")
    return None


@dataclass(frozen=True)
class Route:
    """Where a failed record goes: a retry topic or the dead-letter topic, with headers."""

    topic: str
    headers: list[tuple[str, bytes]]
    dead_letter: bool


class RetryPolicy:
    """Maps a failure to its next topic, from the configured delays."""

    def __init__(self, settings: Settings) -> None:
        self.delays_s = list(settings.retry_delays_s)
        self.topics = [
            topic_name(retry_topic(level), settings) for level in range(1, len(self.delays_s) + 1)
        ]
        self.dead_letter_topic = topic_name(Topic.DEAD_LETTER, settings)

    def is_retry_topic(self, topic: str) -> bool:
        return topic in self.topics

    def route(
        self, stage: str, record: Record, error: ClassifiedError, previous: Failure | None
    ) -> Route:
        """Decide the next stop of ``record`` after ``error``; ``previous`` is the failure it
        carried in from a retry topic, if any."""
        now = datetime.now(UTC)
        failure = Failure(
            stage=stage,
            error_type=error.kind,
            code=error.code,
            message=error.message,
            attempts=record.attempt + 1,
            original_topic=record.topic,
            original_partition=record.partition,
            original_offset=record.offset,
            first_failure=previous.first_failure if previous else now,
            last_failure=now,
        )
        if not error.transient or failure.attempts > len(self.delays_s):
            return Route(self.dead_letter_topic, failure.headers(), dead_letter=True)
        delay_s = self.delays_s[failure.attempts - 1]
        due = int((time.time() + delay_s) * 1000)
        headers = [*failure.headers(), (DUE_MS, str(due).encode())]
        return Route(self.topics[failure.attempts - 1], headers, dead_letter=False)


def as_original(record: Record, failure: Failure) -> Record:
    """A record read from a retry topic, as the stage first saw it (plus its attempt count)."""
    return replace(
        record,
        topic=failure.original_topic,
        partition=failure.original_partition,
        offset=failure.original_offset,
        headers=user_headers(record.headers),
        attempt=failure.attempts,
    )
