"""The stage runner: consume, transform, produce — exactly once, batch by batch.

One worker process runs one :class:`Runner`: one ``read_committed`` consumer in the stage's
group and one transactional producer. Records are handled in batches, each batch one Kafka
transaction holding the batch's outputs (and retry / dead-letter records) *and* the consumer
offsets after it, so a record's effects and the fact that it was consumed become visible
together or not at all. A batch closes at ``batch_max_records`` records or after
``batch_max_ms``, whichever comes first: the first bounds memory and the work redone after a
crash, the second bounds end-to-end latency.

What can interrupt a batch, and what happens to it:

- partitions revoked or lost in a rebalance: the transaction is aborted; whoever owns the
  partitions next starts from the last committed offsets;
- an abortable transaction error: abort, rewind to the committed offsets, redo the batch;
- SIGTERM / SIGINT: the open batch is committed (bounded by ``shutdown_timeout_s``), the worker
  leaves its group and returns normally (exit 0);
- a fatal producer error (fenced by a newer worker, for instance): :class:`FatalRuntimeError`,
  exit non-zero; the work it had open is aborted by the broker and redone elsewhere;
- SIGKILL: the broker aborts the open transaction when a worker with the same ``worker_id``
  starts (or after ``transaction_timeout_ms``), and the batch is redone from committed offsets.

Zombie fencing follows KIP-447: offsets are sent with the consumer's group metadata, so a
worker that lost its partitions cannot commit for them, whatever its ``transactional.id``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from labelflow.config import Settings
from labelflow.errors import LabelflowError
from labelflow.events import encode
from labelflow.kafka.clients import consumer, producer
from labelflow.kafka.metrics import StageMetrics
from labelflow.kafka.retry import Failure, RetryPolicy, as_original, due_ms, user_headers
from labelflow.kafka.topics import topic_name
from labelflow.shutdown import stop_on_signals
from labelflow.stage import Output, PermanentError, Record, Stage, StageError, TransientError

log = logging.getLogger(__name__)

T = TypeVar("T")
Partition = tuple[str, int]

POLL_TIMEOUT_S = 0.1
"""Longest wait for records: bounds how late a stop request or a due retry is noticed."""

TXN_TIMEOUT_S = 30.0
"""Bound on one transactional call; without it a broker that stopped answering would hang the
worker forever instead of failing it so it can be restarted."""

LAG_INTERVAL_S = 5.0
"""How often lag is measured; measuring reads cached watermarks, but not on every poll."""


class FatalRuntimeError(LabelflowError):
    """The worker cannot go on (fenced, or its producer failed fatally); restart it."""


class _AbortRequired(Exception):
    """The open transaction cannot commit; abort it and redo the batch."""


@dataclass
class _Batch:
    """The open transaction: next offset per input partition, and its size and age."""

    offsets: dict[Partition, int] = field(default_factory=dict)
    records: int = 0
    started: float = 0.0
    open: bool = False


class Runner:
    """Runs one stage in this process until :meth:`stop` (or SIGTERM/SIGINT)."""

    def __init__(self, stage: Stage, settings: Settings, worker_id: str | None = None) -> None:
        self.stage = stage
        self.settings = settings
        # A stable id lets a restarted worker fence its predecessor at once (aborting what it
        # left open) instead of waiting for the transaction timeout.
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.retry = RetryPolicy(settings)
        self.inputs = [topic_name(t, settings) for t in stage.inputs]
        self.outputs = {str(t): topic_name(t, settings) for t in stage.outputs}
        self.metrics = StageMetrics(stage.name)
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        self._assigned: set[Partition] = set()
        self._parked: dict[Partition, int] = {}
        self._batch = _Batch()
        self._last_progress = time.monotonic()
        self._next_lag_check = 0.0
        self._producer: Producer
        self._consumer: Consumer

    # --- lifecycle ----------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the worker to finish its batch and leave; safe from signal handlers/threads."""
        self._stop.set()

    def run(self) -> None:
        """Join the group and process until stopped. Raises :class:`FatalRuntimeError`."""
        # Prefixed like the topics: two deployments sharing a cluster under different prefixes
        # must neither share a group nor fence each other's transactional ids.
        group = self.settings.topic_prefix + self.stage.consumer_group
        self._producer = producer(
            self.settings,
            {
                "transactional.id": f"{group}.{self.worker_id}",
                "transaction.timeout.ms": self.settings.transaction_timeout_ms,
                "error_cb": self._on_client_error,
            },
        )
        self._consumer = consumer(
            self.settings,
            group,
            {
                "session.timeout.ms": self.settings.session_timeout_ms,
                "heartbeat.interval.ms": max(100, self.settings.session_timeout_ms // 5),
                # Prefetch about one batch per partition. librdkafka's default (100,000
                # records) is memory the worker does not need, and a rebalance is only seen
                # after every record fetched before it: a long queue delays it by minutes.
                "queued.min.messages": self.settings.batch_max_records,
                "error_cb": self._on_client_error,
            },
        )
        self._txn_call(lambda: self._producer.init_transactions(TXN_TIMEOUT_S), TXN_TIMEOUT_S)
        self._consumer.subscribe(
            self.inputs + self.retry.topics,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        log.info(
            "worker started",
            extra={"stage": self.stage.name, "worker": self.worker_id, "inputs": self.inputs},
        )
        with stop_on_signals(self.stop):
            try:
                self._loop()
                self._finish()
            except FatalRuntimeError:
                self._consumer.close()
                raise
        log.info("worker stopped", extra={"stage": self.stage.name, "worker": self.worker_id})

    def _loop(self) -> None:
        limit = self.settings.batch_max_records
        while not self._stop.is_set():
            if self._fatal is not None:
                raise FatalRuntimeError(f"Kafka client failed fatally: {self._fatal.str()}")
            self._resume_due()
            messages = self._consumer.consume(
                num_messages=limit - self._batch.records, timeout=self._poll_timeout()
            )
            for message in messages:
                if self._stop.is_set():
                    break  # handled records are committed by _finish; the rest is redone
                self._handle(message)
                # Checked per record, not per fetch: a fetch of slow records (imagery reads)
                # could otherwise keep one transaction open past transaction_timeout_ms, and
                # the broker would abort it and fence this worker, again on every restart.
                if self._batch_due():
                    self._commit()
            self._producer.poll(0)
            if self._batch_due():
                self._commit()
            self._watch_lag()

    def _batch_due(self) -> bool:
        return self._batch.open and (
            self._batch.records >= self.settings.batch_max_records
            or time.monotonic() - self._batch.started >= self.settings.batch_max_ms / 1000
        )

    def _finish(self) -> None:
        """Graceful stop: commit the open batch (abort if that fails), then leave the group
        so the partitions move to another worker at once rather than after a timeout."""
        if self._batch.open:
            log.info(
                "stopping: committing the open batch",
                extra={"stage": self.stage.name, "records": self._batch.records},
            )
            try:
                self._commit(timeout_s=self.settings.shutdown_timeout_s)
            except FatalRuntimeError:
                log.warning("could not commit the last batch; it will be redone elsewhere")
        self._consumer.close()

    def _poll_timeout(self) -> float:
        if not self._batch.open:
            return POLL_TIMEOUT_S
        left = self._batch.started + self.settings.batch_max_ms / 1000 - time.monotonic()
        return max(0.0, min(POLL_TIMEOUT_S, left))

    def _on_client_error(self, error: KafkaError) -> None:
        if error.fatal():
            # Logged here: the exception raised later only says "Local: Fatal error", while
            # this error names the cause (fenced by a newer epoch, invalid producer state).
            log.error(
                "kafka client failed fatally",
                extra={"stage": self.stage.name, "code": error.name(), "error": error.str()},
            )
            self._fatal = error
        else:
            log.debug("kafka client error", extra={"error": error.str()})

    # --- one record ---------------------------------------------------------------------
    def _handle(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            if error.fatal():
                raise FatalRuntimeError(f"consumer failed fatally: {error.str()}")
            log.warning("consume error", extra={"stage": self.stage.name, "error": error.str()})
            return
        where = (message.topic(), message.partition())
        if where not in self._assigned or where in self._parked:
            return  # fetched before a revoke, or behind a retry record that is not due yet
        record = Record(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value() or b"",
            headers=tuple(message.headers() or ()),
            timestamp_ms=message.timestamp()[1],
        )
        previous: Failure | None = None
        if self.retry.is_retry_topic(record.topic):
            previous = Failure.from_headers(record.headers)
            if previous is None or previous.stage != self.stage.name:
                self._advance(where, record.offset)  # another stage's retry
                return
            due = due_ms(record.headers)
            if due > time.time() * 1000:
                self._park(where, record.offset, due)
                return
            record = as_original(record, previous)
        self._process(record, previous)
        self._advance(where, message.offset())

    def _process(self, record: Record, previous: Failure | None) -> None:
        self._begin()
        self.metrics.consumed.inc()
        try:
            outputs = [self._encode(out) for out in self.stage.process(record)]
        except StageError as exc:
            self._route_failure(record, exc, previous)
            return
        except Exception as exc:  # unclassified: retried, then dead-lettered
            log.exception("stage raised an unclassified error", extra={"stage": self.stage.name})
            unhandled = TransientError("stage.unhandled", f"{type(exc).__name__}: {exc}")
            self._route_failure(record, unhandled, previous)
            return
        for topic, key, value, headers in outputs:
            self._produce(topic, key, value, list(headers))
        self.metrics.produced.inc(len(outputs))

    def _encode(self, out: Output) -> tuple[str, bytes | None, bytes, tuple[Any, ...]]:
        topic = self.outputs.get(str(out.topic))
        if topic is None:
            raise PermanentError(
                "stage.undeclared_output", f"{self.stage.name} does not declare {out.topic}"
            )
        value = out.value if isinstance(out.value, bytes) else encode(out.value)
        key = out.key.encode() if isinstance(out.key, str) else out.key
        return topic, key, value, out.headers

    def _route_failure(self, record: Record, error: StageError, previous: Failure | None) -> None:
        route = self.retry.route(self.stage.name, record, error, previous)
        headers = [*user_headers(record.headers), *route.headers]
        self._produce(route.topic, record.key, record.value, headers)
        extra = {
            "stage": self.stage.name,
            "code": error.code,
            "attempts": record.attempt + 1,
            "topic": record.topic,
            "partition": record.partition,
            "offset": record.offset,
        }
        if route.dead_letter:
            self.metrics.dead_lettered(error.code)
            log.warning("record dead-lettered: %s", error.message, extra=extra)
        else:
            self.metrics.retried(error.code)
            log.info("record sent to retry: %s", error.message, extra=extra)

    def _produce(
        self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]
    ) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                # Back-pressure: the producer's queue is full. Serve deliveries until there is
                # room instead of buffering more in Python.
                self._producer.poll(0.05)

    def _advance(self, where: Partition, offset: int) -> None:
        self._begin()
        self._batch.offsets[where] = offset + 1
        self._batch.records += 1
        self._last_progress = time.monotonic()

    def _begin(self) -> None:
        if not self._batch.open:
            self._producer.begin_transaction()
            self._batch = _Batch(open=True, started=time.monotonic())

    # --- retry records that are not due yet ---------------------------------------------
    def _park(self, where: Partition, offset: int, due: int) -> None:
        """Hold a retry partition at ``offset`` until ``due``: records behind it in the same
        retry topic are due no earlier, and the other partitions keep flowing."""
        tp = TopicPartition(where[0], where[1], offset)
        self._consumer.pause([tp])
        self._consumer.seek(tp)
        self._parked[where] = due

    def _resume_due(self) -> None:
        now = time.time() * 1000
        due = [where for where, at in self._parked.items() if at <= now]
        for where in due:
            del self._parked[where]
        if due:
            self._consumer.resume([TopicPartition(t, p) for t, p in due])

    # --- transactions -------------------------------------------------------------------
    def _commit(self, timeout_s: float = TXN_TIMEOUT_S) -> None:
        """Make the batch's outputs and its consumed offsets visible together.

        1. send the next offset of every partition in the batch, with the group metadata
           (this is what fences a worker that lost its partitions);
        2. commit the transaction, which first flushes every record produced in it;
        3. if either step needs an abort, abort and rewind: the batch is redone.
        """
        batch = self._batch
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        try:
            # 1.
            self._txn_call(
                lambda: self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), timeout_s
                ),
                timeout_s,
            )
            # 2.
            self._txn_call(lambda: self._producer.commit_transaction(timeout_s), timeout_s)
        except _AbortRequired as exc:
            # 3.
            self._abort(f"commit failed: {exc}")
            return
        self._batch = _Batch()
        self.metrics.committed.inc()
        self.metrics.batch_seconds.observe(time.monotonic() - batch.started)
        log.debug(
            "transaction committed", extra={"stage": self.stage.name, "records": batch.records}
        )

    def _abort(self, reason: str) -> None:
        """Abort the open transaction and rewind the still-assigned partitions to their
        committed offsets; without the rewind the consumer would skip the aborted records."""
        self._txn_call(lambda: self._producer.abort_transaction(TXN_TIMEOUT_S), TXN_TIMEOUT_S)
        records = self._batch.records
        self._batch = _Batch()
        self.metrics.aborted.inc()
        log.warning(
            "transaction aborted; its records will be redone",
            extra={"stage": self.stage.name, "reason": reason, "records": records},
        )
        self._rewind()

    def _rewind(self) -> None:
        if not self._assigned:
            return
        wanted = [TopicPartition(t, p) for t, p in self._assigned]
        self._consumer.resume([TopicPartition(t, p) for t, p in self._parked])
        self._parked.clear()
        for tp in self._consumer.committed(wanted, timeout=TXN_TIMEOUT_S):
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _txn_call(self, call: Callable[[], T], timeout_s: float) -> T:
        """Run a transactional call the way librdkafka classifies its errors: retry the
        retriable ones until ``timeout_s``, surface the abortable ones, stop on fatal ones."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return call()
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                if error.fatal():
                    raise FatalRuntimeError(
                        f"{self.stage.name} worker {self.worker_id} can no longer produce: "
                        f"{error.str()}",
                        hint="another worker probably took over (fenced); restart this one",
                    ) from None
                if error.txn_requires_abort():
                    raise _AbortRequired(error.str()) from None
                if not (error.retriable() and time.monotonic() < deadline):
                    raise FatalRuntimeError(
                        f"transactional call failed: {error.str()}",
                        hint="is the broker reachable? the batch is redone after a restart",
                    ) from None
                log.info("retrying a transactional call", extra={"error": error.str()})

    # --- rebalances ---------------------------------------------------------------------
    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update((tp.topic, tp.partition) for tp in partitions)
        log.info(
            "partitions assigned",
            extra={"stage": self.stage.name, "partitions": _names(partitions)},
        )

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Abort in-flight work: its offsets could no longer be committed by this worker, and
        the new owner redoes it from the committed offsets."""
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self._assigned -= revoked
        parked = [TopicPartition(t, p) for t, p in revoked & self._parked.keys()]
        if parked:
            self._consumer.resume(parked)
        for where in revoked:
            self._parked.pop(where, None)
            self.metrics.forget_partition(*where)
        if self._batch.open:
            self._abort("partitions revoked")
        log.info(
            "partitions revoked", extra={"stage": self.stage.name, "partitions": _names(partitions)}
        )

    # --- lag and stalls -----------------------------------------------------------------
    def _watch_lag(self) -> None:
        """Publish lag per partition and flag a stall: lag on partitions that are not waiting
        for a retry, yet no record handled for ``stall_after_s``."""
        now = time.monotonic()
        if now < self._next_lag_check or not self._assigned:
            return
        self._next_lag_check = now + LAG_INTERVAL_S
        waiting = self._parked.keys()
        total = 0
        positions = self._consumer.position([TopicPartition(t, p) for t, p in self._assigned])
        for tp in positions:
            watermarks = self._consumer.get_watermark_offsets(tp, cached=True)
            if watermarks is None or tp.offset < 0 or watermarks[1] < 0:
                continue
            lag = max(0, watermarks[1] - tp.offset)
            self.metrics.lag(tp.topic, tp.partition, lag)
            if (tp.topic, tp.partition) not in waiting:
                total += lag
        idle_s = now - self._last_progress
        stalled = total > 0 and idle_s >= self.settings.stall_after_s
        if stalled:
            log.warning(
                "stage stalled: partitions have lag but nothing was processed",
                extra={"stage": self.stage.name, "lag": total, "idle_s": round(idle_s, 1)},
            )
        self.metrics.stalled.set(1 if stalled else 0)


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
