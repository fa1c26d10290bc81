"""Hands source records to the pipeline: events into ``annotations.raw``, webhook hints into
``sources.changes``.

Keyed by task id, so every revision of a task lands on one partition, in order. The producer
is idempotent: its own retries after a lost acknowledgement never duplicate a record. A whole
re-delivery (the same file ingested twice, a repeated webhook) is made harmless downstream:
validate drops a revision the catalog already holds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

import labelflow.stages  # noqa: F401 - registers the event schemas that encode() looks up
from labelflow.config import Settings
from labelflow.errors import LabelflowError, PermanentError
from labelflow.events import encode
from labelflow.kafka.clients import producer
from labelflow.kafka.topics import Topic, topic_name
from labelflow.model import AnnotationEvent, Quarantined
from labelflow.sources.labelstudio import TaskChanged

FLUSH_TIMEOUT_S = 60.0
"""Bound on waiting for acknowledgements: a broker that is gone must end ingest with an error,
not hang it."""


class PayloadTooLarge(PermanentError):
    """The Kafka client refuses a record this large (``message.max.bytes``)."""

    def __init__(self, message: str) -> None:
        super().__init__("payload.too_large", message)


TooLargeHandler = Callable[[bytes | None, bytes], None]
"""Called with the key and value of a record the broker refused as too large."""


class RawPublisher:
    """Produces events (or raw bytes from a source) into ``annotations.raw``, and records a
    source refused outright into ``annotations.quarantine``.

    A record larger than the client takes raises :class:`PayloadTooLarge` at once. One the
    broker refuses as too large (its topic limit can be lower) is known only when its
    delivery report arrives: it goes to ``on_too_large`` when given, so the caller can
    quarantine it, and otherwise makes :meth:`flush` fail like any undelivered record.
    """

    def __init__(
        self,
        settings: Settings,
        on_too_large: TooLargeHandler | None = None,
        client_overrides: dict[str, Any] | None = None,
    ) -> None:
        self.topic = topic_name(Topic.RAW, settings)
        self.quarantine_topic = topic_name(Topic.QUARANTINE, settings)
        self._producer = producer(settings, client_overrides)
        self._failures: list[str] = []
        self._on_too_large = on_too_large
        self.sent = 0

    def _on_delivery(self, error: KafkaError | None, msg: Message) -> None:
        if error is None:
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE and self._on_too_large is not None:
            self._on_too_large(msg.key(), msg.value() or b"")
        else:
            self._failures.append(error.str())

    def publish(self, event: AnnotationEvent) -> None:
        self.publish_raw(event.task_id, encode(event))

    def publish_raw(self, key: str, value: bytes) -> None:
        """Produce ``value`` as is: sources that cannot parse their input still deliver it,
        so validate can quarantine it with a reason instead of it vanishing."""
        self._produce(self.topic, key, value)
        self.sent += 1

    def quarantine(
        self, held: Quarantined, key: str, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        """Hold back what a source could not turn into an event, with its reasons."""
        self._produce(self.quarantine_topic, key, encode(held), headers)

    def _produce(
        self, topic: str, key: str, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> None:
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key.encode(),
                    headers=list(headers),
                    on_delivery=self._on_delivery,
                )
                break
            except BufferError:  # local queue full: wait for acknowledgements, then go on
                self._producer.poll(0.5)
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    raise PayloadTooLarge(
                        f"{len(value)} bytes for {topic}: {error.str()}"
                    ) from None
                raise LabelflowError(
                    f"Kafka refused a record for {topic}: {error.str()}",
                    hint="check that Kafka is up and the topics exist (labelflow topics ensure)",
                ) from None
        self._producer.poll(0)

    def flush(self) -> None:
        """Wait until every record is acknowledged; raise if any could not be delivered."""
        left = self._producer.flush(FLUSH_TIMEOUT_S)
        if left or self._failures:
            failures = "; ".join(sorted(set(self._failures))[:3]) or f"{left} unacknowledged"
            raise LabelflowError(
                f"{left + len(self._failures)} record(s) could not be delivered to "
                f"{self.topic}: {failures}",
                hint="check that Kafka is up (labelflow kafka status) and run the command again",
            )


HINT_ACK_TIMEOUT_S = 10.0
"""How long accepting a hint may wait for the broker's acknowledgement. Label Studio stops
waiting after about a second and never retries, so waiting longer gains that request nothing;
the bound keeps an unreachable broker from holding every request thread forever."""


class HintNotDelivered(LabelflowError):
    """The broker did not acknowledge a hint: the caller must not report it as accepted."""


class HintPublisher:
    """Produces :class:`TaskChanged` hints into ``sources.changes``, one record per task.

    :meth:`publish` returns only once the broker acknowledged every record, so a hint that was
    answered "accepted" is durable in Kafka; otherwise it raises :class:`HintNotDelivered`.
    Safe to call from several threads at once.
    """

    def __init__(self, settings: Settings, timeout_s: float = HINT_ACK_TIMEOUT_S) -> None:
        self.topic = topic_name(Topic.SOURCE_CHANGES, settings)
        self.timeout_s = timeout_s
        # librdkafka gives up on a record after message.timeout.ms and reports it as failed;
        # matching our wait means every record has an outcome by the time we stop waiting.
        self._producer = producer(settings, {"message.timeout.ms": int(timeout_s * 1000)})

    def publish(self, hint: TaskChanged) -> None:
        self.publish_all([hint])

    def publish_all(self, hints: Sequence[TaskChanged]) -> None:
        """Every hint, waiting once for all their acknowledgements (a page of a listing)."""
        acks = [self._send(part) for hint in hints for part in split_hint(hint)]
        deadline = time.monotonic() + self.timeout_s
        while not all(ack.done() for ack in acks) and time.monotonic() < deadline:
            self._producer.poll(0.05)
        errors = [ack.result().str() for ack in acks if ack.done() and ack.result() is not None]
        missing = sum(1 for ack in acks if not ack.done())
        if errors or missing:
            reason = "; ".join(sorted(set(errors))) or f"no acknowledgement in {self.timeout_s} s"
            raise HintNotDelivered(
                f"{len(errors) + missing} hint record(s) not delivered to {self.topic}: {reason}",
                hint="check that Kafka is up (labelflow kafka status)",
            )

    def _send(self, hint: TaskChanged) -> Future[KafkaError | None]:
        ack: Future[KafkaError | None] = Future()
        while True:
            try:
                self._producer.produce(
                    self.topic,
                    value=encode(hint),
                    key=hint_key(hint).encode(),
                    on_delivery=lambda error, _msg: ack.set_result(error),
                )
                return ack
            except BufferError:  # local queue full: serve acknowledgements, then go on
                self._producer.poll(0.05)


def split_hint(hint: TaskChanged) -> list[TaskChanged]:
    """One hint per task (one naming annotations only stays whole), so each lands on its
    task's partition and a bulk deletion of many tasks spreads over the stage's workers."""
    if len(hint.task_ids) <= 1:
        return [hint]
    return [hint.model_copy(update={"task_ids": (task_id,)}) for task_id in hint.task_ids]


def hint_key(hint: TaskChanged) -> str:
    """``<project>:<task>`` for a one-task hint, ``<project>`` for one naming no task."""
    if len(hint.task_ids) == 1:
        return f"{hint.project}:{hint.task_ids[0]}"
    return str(hint.project)
