"""The stage contract: what a stage reads, what it writes, how it turns one record into outputs.

A stage never opens a consumer or a producer. The runner (:mod:`labelflow.kafka.runner`) owns
consuming, producing, transactions, retries, metrics and shutdown; a stage only says *what*
to do with one record, and classifies what can go wrong:

- :class:`TransientError`: the world was briefly unavailable (imagery timeout, database down).
  The record is retried later through the retry topics, without blocking its partition.
- :class:`PermanentError`: the record itself is unusable (bad geometry, unknown schema).
  Retrying cannot help, so it goes straight to the dead-letter topic.

Any other exception is a bug or an unforeseen failure; the runner treats it as transient
(``stage.unhandled``) so that a flaky dependency raising an unexpected type is retried, and a
real bug ends in the dead-letter topic after the last attempt, where it can be replayed once
fixed.

Because an aborted transaction redoes its batch, ``process`` may run more than once for the
same record: side effects it performs must be idempotent.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal

from pydantic import BaseModel

from labelflow.errors import LabelflowError
from labelflow.kafka.topics import Topic

TopicRef = Topic | str
"""A logical topic name: a :class:`Topic`, or another name; both get ``topic_prefix``."""

Headers = tuple[tuple[str, bytes], ...]


class StageError(Exception):
    """A classified failure of one record: a stable reason ``code`` and a human ``message``."""

    kind: Literal["transient", "permanent"]

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class TransientError(StageError):
    """Retry later: the record is fine, something it needs is not available right now."""

    kind = "transient"


class PermanentError(StageError):
    """Never retry: the record cannot be processed as it is; dead-letter it with the reason."""

    kind = "permanent"


@dataclass(frozen=True)
class Record:
    """One input record as a stage sees it.

    ``topic``/``partition``/``offset`` always name where the record was first consumed, also
    when it comes back from a retry topic; ``attempt`` counts the failures before this try.
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: Headers = ()
    timestamp_ms: int = 0
    attempt: int = 0

    def event(self) -> BaseModel:
        """The typed event in ``value``; raises :class:`PermanentError` when it is unusable."""
        from labelflow.events import decode

        return decode(self.value)


@dataclass(frozen=True)
class Output:
    """One record to produce. ``value`` is an event (encoded by the runner) or raw bytes."""

    topic: TopicRef
    value: BaseModel | bytes
    key: bytes | str | None = None
    headers: Headers = ()


@dataclass(frozen=True)
class Stage:
    """A named transformation from input topics to output topics, run by a consumer group."""

    name: str
    inputs: tuple[TopicRef, ...]
    outputs: tuple[TopicRef, ...]
    process: Callable[[Record], Iterable[Output]]
    group: str = field(default="")

    @property
    def consumer_group(self) -> str:
        """The group every worker of this stage joins; one group per stage scales it out."""
        return self.group or f"labelflow.{self.name}"


def load_stage(ref: str) -> Stage:
    """Find a stage by ``module:attribute`` import path, or by the name of a built-in stage
    (``validate`` means ``labelflow.stages.validate:STAGE``)."""
    if ":" in ref:
        module_name, attribute = ref.split(":", 1)
    else:
        module_name, attribute = f"labelflow.stages.{ref}", "STAGE"
    try:
        stage = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise LabelflowError(
            f"No stage {ref!r}: {exc}",
            hint="name a built-in stage, or give module:attribute of a labelflow.stage.Stage",
        ) from None
    if not isinstance(stage, Stage):
        raise LabelflowError(f"{ref!r} is a {type(stage).__name__}, not a Stage")
    return stage
