"""The dead-letter topic: read what failed, and replay it once the cause is fixed.

A dead letter's id is ``<partition>:<offset>`` in the dead-letter topic. Replaying writes the
original key, value and headers back to the topic the record was first consumed from, exactly
once (marker header ``labelflow.replay.of``; see :mod:`labelflow.kafka.held`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.kafka.held import READ_TIMEOUT_S, HeldRecord, WriteBack, read_held, write_back
from labelflow.kafka.retry import Failure, user_headers
from labelflow.kafka.topics import Topic, topic_name
from labelflow.model import as_utc
from labelflow.stage import Headers

REPLAY_OF = "labelflow.replay.of"
REPLAYED_FROM = "labelflow.replayed.from"


@dataclass(frozen=True)
class DeadLetter:
    """One record in the dead-letter topic, with the failure its headers describe."""

    id: str
    key: bytes | None
    value: bytes
    headers: Headers
    failure: Failure | None
    replayed: bool = False

    @classmethod
    def of(cls, record: HeldRecord) -> DeadLetter:
        failure = Failure.from_headers(record.headers)
        return cls(record.id, record.key, record.value, record.headers, failure, record.marked)


def read_dead_letters(settings: Settings, timeout_s: float = READ_TIMEOUT_S) -> list[DeadLetter]:
    """Every committed dead letter, oldest first per partition, flagged if already replayed."""
    topic = topic_name(Topic.DEAD_LETTER, settings)
    return [DeadLetter.of(r) for r in read_held(settings, topic, REPLAY_OF, timeout_s)]


def replay(
    settings: Settings, select: Callable[[DeadLetter], bool], dry_run: bool = False
) -> list[DeadLetter]:
    """Re-inject the selected, not yet replayed letters into their original topics, exactly
    once; returns them. A letter whose headers are damaged has no known origin and is skipped.
    """

    def choose(records: list[HeldRecord]) -> list[WriteBack]:
        out = []
        for record in records:
            letter = DeadLetter.of(record)
            if letter.replayed or letter.failure is None or not select(letter):
                continue
            headers = (*user_headers(record.headers), (REPLAYED_FROM, record.id.encode()))
            out.append(
                WriteBack(record, letter.failure.original_topic, record.key, record.value, headers)
            )
        return out

    done = write_back(settings, topic_name(Topic.DEAD_LETTER, settings), REPLAY_OF, choose, dry_run)
    return [DeadLetter.of(w.record) for w in done]


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
    return as_utc(when)
