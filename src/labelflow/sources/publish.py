"""Hands source records to the pipeline: writes them into ``annotations.raw``.

Keyed by task id, so every revision of a task lands on one partition, in order. The producer
is idempotent: its own retries after a lost acknowledgement never duplicate a record. A whole
re-delivery (the same file ingested twice, a repeated webhook) is made harmless downstream:
validate drops a revision the catalog already holds.
"""

from __future__ import annotations

from confluent_kafka import KafkaError, Message

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.events import encode
from labelflow.kafka.clients import producer
from labelflow.kafka.topics import Topic, topic_name
from labelflow.model import AnnotationEvent

FLUSH_TIMEOUT_S = 60.0
"""Bound on waiting for acknowledgements: a broker that is gone must end ingest with an error,
not hang it."""


class RawPublisher:
    """Produces events (or raw bytes from a source) into ``annotations.raw``."""

    def __init__(self, settings: Settings) -> None:
        self.topic = topic_name(Topic.RAW, settings)
        self._producer = producer(settings)
        self._failures: list[str] = []
        self.sent = 0

    def _on_delivery(self, error: KafkaError | None, _msg: Message) -> None:
        if error is not None:
            self._failures.append(error.str())

    def publish(self, event: AnnotationEvent) -> None:
        self.publish_raw(event.task_id, encode(event))

    def publish_raw(self, key: str, value: bytes) -> None:
        """Produce ``value`` as is: sources that cannot parse their input still deliver it,
        so validate can quarantine it with a reason instead of it vanishing."""
        while True:
            try:
                self._producer.produce(
                    self.topic, value=value, key=key.encode(), on_delivery=self._on_delivery
                )
                break
            except BufferError:  # local queue full: wait for acknowledgements, then go on
                self._producer.poll(0.5)
        self._producer.poll(0)
        self.sent += 1

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
