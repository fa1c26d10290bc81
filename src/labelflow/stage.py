"""The stage contract: what a stage reads, what it writes, how it turns records into outputs.

A stage never opens a consumer or a producer, and never reads settings on its own. The runner
(:mod:`labelflow.kafka.runner`) owns consuming, producing, transactions, retries, metrics and
shutdown; it builds the stage's :class:`Processor` once per worker from the one settings
object of the process (``Stage.open(settings)``) and hands it records in batches: the batch
it will commit in one Kafka transaction, so a stage can batch its side effects (one database
transaction per batch, one durability point for a batch's blobs).

What can go wrong is classified (:mod:`labelflow.errors`):

- :class:`TransientError`: the world was briefly unavailable (imagery timeout, database down).
  The record is retried later through the retry topics, without blocking its partition.
- :class:`PermanentError`: the record itself is unusable (bad geometry, unknown schema).
  Retrying cannot help, so it goes straight to the dead-letter topic.

Any other exception is a bug or an unforeseen failure; it is treated as transient
(``stage.unhandled``) so that a flaky dependency raising an unexpected type is retried, and a
real bug ends in the dead-letter topic after the last attempt, where it can be replayed once
fixed.

Because an aborted transaction redoes its batch, a record may be processed more than once:
side effects must be idempotent.

This module imports nothing heavy (no Kafka client, no settings): any stage module, test or
tool can import it.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labelflow.errors import ClassifiedError, LabelflowError, PermanentError, TransientError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from labelflow.config import Settings

__all__ = [
    "ClassifiedError",
    "Output",
    "PermanentError",
    "Processor",
    "Record",
    "RecordProcessor",
    "Result",
    "Stage",
    "TransientError",
    "classify",
    "load_stage",
]

log = logging.getLogger(__name__)

TopicRef = str
"""A logical topic name (a :class:`~labelflow.kafka.topics.Topic` is one); the runner adds
``topic_prefix``."""

Headers = tuple[tuple[str, bytes], ...]


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


Result = Sequence[Output] | ClassifiedError
"""What became of one record: the outputs to produce, or why it failed."""


class Processor:
    """A stage's work inside one worker, built once per worker by :meth:`Stage.open`.

    The runner calls, for each Kafka transaction:

    1. :meth:`process` once per chunk of records (a whole transaction's records arrive in one
       or more chunks, in offset order per partition);
    2. :meth:`flush` before the transaction commits: the durability point for side effects
       the outputs point at (blobs), so a committed output never names a lost artifact;
    3. :meth:`discard` instead, when the transaction aborts (the records will be redone).

    :meth:`close` once when the worker stops. Subclasses override :meth:`process_one` (one
    record at a time) or :meth:`process` (a whole chunk, to batch a side effect).
    """

    def process(self, records: Sequence[Record]) -> list[Result]:
        """One :data:`Result` per record, in order. The default calls :meth:`process_one`."""
        return [self.run_one(record) for record in records]

    def run_one(self, record: Record) -> Result:
        """:meth:`process_one` with its failure caught and classified."""
        try:
            return list(self.process_one(record))
        except Exception as exc:  # noqa: BLE001 - classified below
            return classify(exc)

    def process_one(self, record: Record) -> Iterable[Output]:
        raise NotImplementedError

    def flush(self) -> None:
        """Make this transaction's side effects durable (before its outputs are committed)."""

    def discard(self) -> None:
        """Forget this transaction's pending side effects: it was aborted and will be redone."""

    def close(self) -> None:
        """Release what the processor holds (connections, open files, threads)."""


def classify(exc: Exception) -> ClassifiedError:
    """``exc`` as a classified error: itself, or ``stage.unhandled`` (transient: retried, then
    dead-lettered) for a bug or an unforeseen failure, logged with its traceback."""
    if isinstance(exc, ClassifiedError):
        return exc
    log.error("stage raised an unclassified error", exc_info=exc)
    return TransientError("stage.unhandled", f"{type(exc).__name__}: {exc}")


class RecordProcessor(Processor):
    """A stateless stage: one function from a record to its outputs."""

    def __init__(self, fn: Callable[[Record], Iterable[Output]]) -> None:
        self.fn = fn

    def process_one(self, record: Record) -> Iterable[Output]:
        return self.fn(record)


@dataclass(frozen=True)
class Stage:
    """A named transformation from input topics to output topics, run by a consumer group.

    Give either ``process`` (a stateless function of one record) or ``setup`` (builds the
    worker's :class:`Processor` from the process's settings: catalog, blobs, imagery…).
    """

    name: str
    inputs: tuple[TopicRef, ...]
    outputs: tuple[TopicRef, ...]
    process: Callable[[Record], Iterable[Output]] | None = None
    setup: Callable[[Settings], Processor] | None = None
    group: str = field(default="")

    def __post_init__(self) -> None:
        if (self.process is None) == (self.setup is None):
            raise ValueError(f"stage {self.name!r}: give exactly one of process= or setup=")

    @property
    def consumer_group(self) -> str:
        """The group every worker of this stage joins; one group per stage scales it out."""
        return self.group or f"labelflow.{self.name}"

    def open(self, settings: Settings) -> Processor:
        """This worker's processor, built from the settings the runner was given."""
        if self.setup is not None:
            return self.setup(settings)
        assert self.process is not None
        return RecordProcessor(self.process)


def load_stage(ref: str) -> Stage:
    """Find a stage by ``module:attribute`` import path, or by the name of a built-in stage
    (``validate`` means ``labelflow.stages.validate:STAGE``)."""
    if ":" in ref:
        module_name, attribute = ref.split(":", 1)
    else:
        module_name, attribute = f"labelflow.stages.{ref}", "STAGE"
    try:
        stage: Any = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise LabelflowError(
            f"No stage {ref!r}: {exc}",
            hint="name a built-in stage, or give module:attribute of a labelflow.stage.Stage",
        ) from None
    if not isinstance(stage, Stage):
        raise LabelflowError(f"{ref!r} is a {type(stage).__name__}, not a Stage")
    return stage
