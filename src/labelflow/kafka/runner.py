"""The stage runner: consume, transform, produce — exactly once, batch by batch.

One worker process runs one :class:`Runner`: one ``read_committed`` consumer in the stage's
group, one transactional producer, and the stage's :class:`~labelflow.stage.Processor`, built
once from the settings the runner was given. Records are handled in batches, each batch one
Kafka transaction holding the batch's outputs (and retry / dead-letter records) *and* the
consumer offsets after it, so a record's effects and the fact that it was consumed become
visible together or not at all. A batch commits when the fetch queue is drained (an idle
pipeline is not held back), at ``batch_max_records`` records, or after ``batch_max_ms``,
whichever comes first: the second bounds memory and the work redone after a crash, the third
end-to-end latency under load.

Within a batch the processor gets records in chunks sized to finish before the batch is due
(measured per record as it runs), so a fetch of slow records never holds a transaction open
past ``transaction_timeout_ms``.

What can interrupt a batch, and what happens to it:

- partitions revoked or lost in a rebalance: the transaction is aborted; whoever owns the
  partitions next starts from the last committed offsets;
- an abortable transaction error: abort, rewind to the committed offsets, and drop the rest
  of the fetched records — the rewind fetches them again. Handling them would record their
  offsets past the aborted ones: lost if the worker then died, duplicated when re-fetched;
- SIGTERM / SIGINT: the open batch is committed (bounded by ``shutdown_timeout_s``), the worker
  leaves its group and returns normally (exit 0);
- a fatal producer error (fenced by a newer worker, for instance), or a stall (lag and no
  progress for ``stall_after_s``): :class:`FatalRuntimeError`, exit non-zero, restarted by the
  supervisor; the work it had open is aborted by the broker and redone;
- a call that hangs past its bound (librdkafka does not always honour its own timeouts): the
  :class:`~labelflow.watchdog.Watchdog` ends the process, with the same outcome;
- SIGKILL: the broker aborts the open transaction when a worker with the same ``worker_id``
  starts (or after ``transaction_timeout_ms``), and the batch is redone from committed offsets.

Within a batch a partition's offset only moves forward; a backwards move is a bug and stops
the worker (:class:`OffsetRegression`) rather than commit it.

Zombie fencing follows KIP-447: offsets are sent with the consumer's group metadata, so a
worker that lost its partitions cannot commit for them, whatever its ``transactional.id``.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
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
from labelflow.errors import ClassifiedError, LabelflowError, PermanentError
from labelflow.events import encode
from labelflow.kafka.clients import consumer, producer
from labelflow.kafka.metrics import StageMetrics
from labelflow.kafka.retry import (
    Failure,
    RetryPolicy,
    as_original,
    due_ms,
    failing_stage,
    user_headers,
)
from labelflow.kafka.topics import topic_name
from labelflow.stage import Output, Processor, Record, Result, Stage, classify
from labelflow.watchdog import Watchdog

log = logging.getLogger(__name__)

T = TypeVar("T")
Partition = tuple[str, int]
Encoded = tuple[str, bytes | None, bytes, list[tuple[str, bytes]]]

POLL_TIMEOUT_S = 0.1
"""Longest wait for records: bounds how late a stop request or a due retry is noticed, and
how long an idle pipeline holds a lone record before committing it."""

TXN_TIMEOUT_S = 30.0
"""Bound on one transactional call; past it a broker that stopped answering fails the call."""

TXN_RETRY_PAUSE_S = 0.2
"""Pause before retrying a retriable transactional error, so a retry loop does not spin."""

WATCHDOG_GRACE_S = 15.0
"""How far past its own timeout a call may run before the watchdog ends the worker:
librdkafka's timeouts are approximate, only a call far beyond its own is hung."""

LAG_INTERVAL_S = 5.0
"""How often lag is measured; measuring reads cached watermarks, but not on every poll."""

STATS_INTERVAL_S = 30.0
"""How often a worker logs its throughput and where its time went."""

FIRST_CHUNK = 8
"""Records handed to the processor at once while their cost is still unknown."""

MIN_CHUNK_S = 0.05
"""A chunk is sized to take at least this long: the per-call overhead stays small."""

MAX_CHUNK_S = 0.25
"""A chunk is sized to take at most this long: bounds how late a stop request is noticed
while a long fetch is processed."""


class FatalRuntimeError(LabelflowError):
    """The worker cannot go on (fenced, stalled, or its producer failed fatally); restart it."""


class OffsetRegression(FatalRuntimeError):
    """A partition's offset would move backwards within a batch: a bug, never committed."""


class _AbortRequired(Exception):
    """The open transaction cannot commit; abort it and redo the batch."""


@dataclass
class _Batch:
    """The open transaction: next offset per input partition, and its size and age."""

    offsets: dict[Partition, int] = field(default_factory=dict)
    records: int = 0
    started: float = 0.0
    open: bool = False


@dataclass
class _Stats:
    """Where a worker's time goes, logged every :data:`STATS_INTERVAL_S` and at stop."""

    records: int = 0
    process_s: float = 0.0
    commit_s: float = 0.0
    commits: int = 0
    aborts: int = 0

    def fields(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "process_s": round(self.process_s, 3),
            "commit_s": round(self.commit_s, 3),
            "commits": self.commits,
            "aborts": self.aborts,
        }


@dataclass(frozen=True)
class _Item:
    """One fetched record and what to do with it. ``record`` is None when only its offset
    moves (another stage's retry record); ``failure`` is set when it failed before the stage
    saw it (a retry record whose headers are damaged)."""

    where: Partition
    offset: int
    record: Record | None
    previous: Failure | None = None
    failure: ClassifiedError | None = None


class Runner:
    """Runs one stage in this process until :meth:`stop` is called."""

    def __init__(
        self,
        stage: Stage,
        settings: Settings,
        worker_id: str | None = None,
        watchdog: Watchdog | None = None,
    ) -> None:
        self.stage = stage
        self.settings = settings
        # A stable id lets a restarted worker fence its predecessor at once (aborting what it
        # left open) instead of waiting for the transaction timeout.
        self.worker_id = worker_id or uuid.uuid4().hex[:12]
        self.watchdog = watchdog or Watchdog(f"{stage.name}-{self.worker_id}")
        self._owns_watchdog = watchdog is None
        self.retry = RetryPolicy(settings)
        self.inputs = [topic_name(t, settings) for t in stage.inputs]
        self.outputs = {str(t): topic_name(t, settings) for t in stage.outputs}
        self.metrics = StageMetrics(stage.name)
        self._stop = threading.Event()
        self._fatal: KafkaError | None = None
        self._assigned: set[Partition] = set()
        self._parked: dict[Partition, int] = {}
        self._batch = _Batch()
        self._aborted = False
        self._per_record_s = 0.0
        self._stats = _Stats()
        self._next_stats = time.monotonic() + STATS_INTERVAL_S
        self._last_progress = time.monotonic()
        self._next_lag_check = 0.0
        self._processor: Processor
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
        # Before any client: a stage that cannot start (catalog unreachable) fails at once.
        self._processor = self.stage.open(self.settings)
        if self._owns_watchdog:
            self.watchdog.start()
        try:
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
                    # records) is memory the worker does not need, and a rebalance is only
                    # seen after every record fetched before it: a long queue delays it.
                    "queued.min.messages": self.settings.batch_max_records,
                    "error_cb": self._on_client_error,
                },
            )
            self._txn_call(
                "init_transactions",
                lambda: self._producer.init_transactions(TXN_TIMEOUT_S),
                TXN_TIMEOUT_S,
            )
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
            try:
                self._loop()
                self._finish()
            except FatalRuntimeError:
                self._close_consumer()
                raise
        finally:
            self._processor.close()
            if self._owns_watchdog:
                self.watchdog.close()
        log.info(
            "worker stopped",
            extra={"stage": self.stage.name, "worker": self.worker_id, **self._stats.fields()},
        )

    def _loop(self) -> None:
        while not self._stop.is_set():
            if self._fatal is not None:
                raise FatalRuntimeError(f"Kafka client failed fatally: {self._fatal.str()}")
            self._resume_due()
            wanted = self.settings.batch_max_records - self._batch.records
            self._aborted = False
            messages = self._consumer.consume(num_messages=wanted, timeout=self._poll_timeout())
            if self._aborted:
                # A revoke aborted the batch inside this call; what it returned may be from
                # before the rewind, or past it. Drop it all and fetch again from committed.
                self._rewind()
                continue
            if messages:
                self._handle_fetch(messages)
            self._producer.poll(0)
            drained = len(messages) < wanted
            if self._batch.open and (drained or self._batch_due()):
                self._commit()
            self._watch_lag()
            self._log_stats()

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
        self._close_consumer()

    def _close_consumer(self) -> None:
        with self.watchdog.bound(self.settings.shutdown_timeout_s, "consumer.close"):
            self._consumer.close()

    def _poll_timeout(self) -> float:
        if not self._batch.open:
            return POLL_TIMEOUT_S
        return max(0.0, min(POLL_TIMEOUT_S, self._batch_left_s()))

    def _batch_left_s(self) -> float:
        return self._batch.started + self.settings.batch_max_ms / 1000 - time.monotonic()

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

    # --- a fetch --------------------------------------------------------------------------
    def _handle_fetch(self, messages: list[Message]) -> None:
        """Process a fetch in chunks, committing whenever the batch is due between them.

        After an abort the rest of the fetch is dropped: the rewind fetches it again.
        """
        items = [item for item in map(self._admit, messages) if item is not None]
        done = 0
        while done < len(items) and not self._stop.is_set():
            chunk = items[done : done + self._chunk_size(len(items) - done)]
            self._process_chunk(chunk)
            done += len(chunk)
            if self._batch_due():
                self._commit()
                if self._aborted:
                    return

    def _chunk_size(self, remaining: int) -> int:
        if self._per_record_s <= 0:
            return min(remaining, FIRST_CHUNK)
        left_s = self._batch_left_s() if self._batch.open else self.settings.batch_max_ms / 1000
        budget_s = min(max(left_s, MIN_CHUNK_S), MAX_CHUNK_S)
        return max(1, min(remaining, int(budget_s / self._per_record_s)))

    def _admit(self, message: Message) -> _Item | None:
        """What to do with one fetched message; None when it is not ours to handle now."""
        error = message.error()
        if error is not None:
            if error.fatal():
                raise FatalRuntimeError(f"consumer failed fatally: {error.str()}")
            log.warning("consume error", extra={"stage": self.stage.name, "error": error.str()})
            return None
        where = (message.topic(), message.partition())
        if where not in self._assigned or where in self._parked:
            return None  # fetched before a revoke, or behind a retry record that is not due yet
        record = Record(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value() or b"",
            headers=tuple(message.headers() or ()),
            timestamp_ms=message.timestamp()[1],
        )
        if not self.retry.is_retry_topic(record.topic):
            return _Item(where, record.offset, record)
        if failing_stage(record.headers) != self.stage.name:
            return _Item(where, record.offset, None)  # another stage's retry
        previous = Failure.from_headers(record.headers)
        due = due_ms(record.headers)
        if previous is None or due is None:
            damaged = PermanentError(
                "retry.headers_damaged",
                f"a {self.stage.name} retry record whose failure headers cannot be read",
            )
            return _Item(where, record.offset, record, failure=damaged)
        if due > time.time() * 1000:
            self._park(where, record.offset, due)
            return None
        return _Item(where, record.offset, as_original(record, previous), previous)

    def _process_chunk(self, chunk: Sequence[_Item]) -> None:
        self._begin()
        todo = [item for item in chunk if item.record is not None and item.failure is None]
        started = time.monotonic()
        results = self._run_processor([item.record for item in todo]) if todo else []  # type: ignore[misc]
        if todo:
            per_record = (time.monotonic() - started) / len(todo)
            self._per_record_s = (
                per_record
                if self._per_record_s <= 0
                else 0.7 * self._per_record_s + 0.3 * per_record
            )
            self._stats.process_s += time.monotonic() - started
        outcome = {id(item): result for item, result in zip(todo, results, strict=True)}
        for item in chunk:
            if item.record is not None:
                self.metrics.consumed.inc()
                self._stats.records += 1
                result = item.failure or outcome[id(item)]
                self._deliver(item, result)
            self._advance(item.where, item.offset)

    def _run_processor(self, records: list[Record]) -> list[Result]:
        """The processor's results for ``records``; if the chunk fails as a whole, each record
        alone, so one bad record never fails its neighbours."""
        bound_s = self.settings.transaction_timeout_ms / 1000 + WATCHDOG_GRACE_S
        with self.watchdog.bound(bound_s, f"{self.stage.name}.process"):
            try:
                results = self._processor.process(records)
                if len(results) != len(records):
                    raise RuntimeError(f"{len(results)} results for {len(records)} records")
                return results
            except Exception as exc:  # noqa: BLE001 - classified or isolated below
                if len(records) == 1:
                    return [classify(exc)]
                log.warning(
                    "a chunk failed as a whole; processing its records one by one",
                    extra={"stage": self.stage.name, "error": str(exc)},
                )
            return [self._run_one(record) for record in records]

    def _run_one(self, record: Record) -> Result:
        try:
            return self._processor.process([record])[0]
        except Exception as exc:  # noqa: BLE001 - classified
            return classify(exc)

    def _deliver(self, item: _Item, result: Result) -> None:
        record = item.record
        assert record is not None
        if isinstance(result, ClassifiedError):
            self._route_failure(record, result, item.previous)
            return
        try:
            encoded = [self._encode(out) for out in result]
        except ClassifiedError as exc:
            self._route_failure(record, exc, item.previous)
            return
        for topic, key, value, headers in encoded:
            self._produce(topic, key, value, headers)
        self.metrics.produced.inc(len(encoded))

    def _encode(self, out: Output) -> Encoded:
        topic = self.outputs.get(str(out.topic))
        if topic is None:
            raise PermanentError(
                "stage.undeclared_output", f"{self.stage.name} does not declare {out.topic}"
            )
        value = out.value if isinstance(out.value, bytes) else encode(out.value)
        key = out.key.encode() if isinstance(out.key, str) else out.key
        return topic, key, value, list(out.headers)

    def _route_failure(
        self, record: Record, error: ClassifiedError, previous: Failure | None
    ) -> None:
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
            except KafkaException as exc:
                # Fatal here means the producer was fenced: the broker aborted this
                # transaction (it outlived transaction_timeout_ms) and bumped the epoch.
                raise FatalRuntimeError(
                    f"{self.stage.name} worker {self.worker_id} can no longer produce: "
                    f"{exc.args[0].str()}",
                    hint="the open batch was aborted by the broker; a restart redoes it",
                ) from None

    def _advance(self, where: Partition, offset: int) -> None:
        self._begin()
        current = self._batch.offsets.get(where)
        if current is not None and offset < current:
            raise OffsetRegression(
                f"{self.stage.name}: offset {offset} of {where[0]}[{where[1]}] arrived after "
                f"offsets up to {current - 1} were handled in the same transaction",
                hint="this is a bug in the runner; the batch is not committed",
            )
        self._batch.offsets[where] = offset + 1
        self._batch.records += 1

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

        1. make the side effects the outputs point at durable (the processor's ``flush``:
           a committed sample must never name a blob that a crash could lose);
        2. send the next offset of every partition in the batch, with the group metadata
           (this is what fences a worker that lost its partitions);
        3. commit the transaction, which first flushes every record produced in it;
        4. if any step fails so that the batch cannot commit, abort and rewind: it is redone.
        """
        batch = self._batch
        offsets = [TopicPartition(t, p, o) for (t, p), o in batch.offsets.items()]
        started = time.monotonic()
        try:
            # 1.
            try:
                with self.watchdog.bound(timeout_s + WATCHDOG_GRACE_S, "processor.flush"):
                    self._processor.flush()
            except Exception as exc:
                raise _AbortRequired(f"could not make side effects durable: {exc}") from exc
            # 2.
            self._txn_call(
                "send_offsets_to_transaction",
                lambda: self._producer.send_offsets_to_transaction(
                    offsets, self._consumer.consumer_group_metadata(), timeout_s
                ),
                timeout_s,
            )
            # 3.
            self._txn_call(
                "commit_transaction",
                lambda: self._producer.commit_transaction(timeout_s),
                timeout_s,
            )
        except _AbortRequired as exc:
            # 4.
            self._abort(f"commit failed: {exc}")
            return
        self._batch = _Batch()
        self._last_progress = time.monotonic()
        self._stats.commit_s += self._last_progress - started
        self._stats.commits += 1
        self.metrics.committed.inc()
        self.metrics.batch_seconds.observe(self._last_progress - batch.started)
        log.debug(
            "transaction committed", extra={"stage": self.stage.name, "records": batch.records}
        )

    def _abort(self, reason: str) -> None:
        """Abort the open transaction and rewind the still-assigned partitions to their
        committed offsets; without the rewind the consumer would skip the aborted records.
        Sets ``_aborted``: whoever is handling a fetch must drop the rest of it."""
        self._aborted = True
        try:
            self._processor.discard()
        except Exception:
            log.exception("could not discard the aborted batch's side effects")
        self._txn_call(
            "abort_transaction",
            lambda: self._producer.abort_transaction(TXN_TIMEOUT_S),
            TXN_TIMEOUT_S,
        )
        records = self._batch.records
        self._batch = _Batch()
        self._stats.aborts += 1
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
        try:
            with self.watchdog.bound(TXN_TIMEOUT_S + WATCHDOG_GRACE_S, "consumer.committed"):
                committed = self._consumer.committed(wanted, timeout=TXN_TIMEOUT_S)
        except KafkaException as exc:
            raise FatalRuntimeError(
                f"cannot read committed offsets to rewind: {exc.args[0].str()}",
                hint="is the broker reachable? the batch is redone after a restart",
            ) from None
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))

    def _txn_call(self, name: str, call: Callable[[], T], timeout_s: float) -> T:
        """Run a transactional call the way librdkafka classifies its errors: retry the
        retriable ones until ``timeout_s``, surface the abortable ones, stop on fatal ones.
        The watchdog ends the worker if the call itself never returns."""
        deadline = time.monotonic() + timeout_s
        with self.watchdog.bound(timeout_s + WATCHDOG_GRACE_S, name):
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
                            f"{name} failed: {error.str()}",
                            hint="is the broker reachable? the batch is redone after a restart",
                        ) from None
                    log.info("retrying a transactional call", extra={"error": error.str()})
                    # A broker that just refused is rarely back within milliseconds.
                    time.sleep(min(TXN_RETRY_PAUSE_S, max(0.0, deadline - time.monotonic())))

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

    # --- lag, stalls and stats ----------------------------------------------------------
    def _watch_lag(self) -> None:
        """Publish lag per partition, and end a stalled worker: lag on partitions that are not
        waiting for a retry, yet nothing committed for ``stall_after_s``. Its supervisor
        restarts it; a fresh consumer and producer is what a wedged client needs."""
        now = time.monotonic()
        if not self._assigned:
            self._last_progress = now  # nothing to do is not a stall
            return
        if now < self._next_lag_check:
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
        if total == 0 and not self._batch.open:
            self._last_progress = now
        idle_s = now - self._last_progress
        stalled = total > 0 and idle_s >= self.settings.stall_after_s
        self.metrics.stalled.set(1 if stalled else 0)
        if stalled:
            raise FatalRuntimeError(
                f"{self.stage.name} stalled: {total} records of lag and nothing committed for "
                f"{idle_s:.0f} s",
                hint="the worker exits so that its supervisor starts a fresh one",
            )

    def _log_stats(self) -> None:
        now = time.monotonic()
        if now < self._next_stats:
            return
        self._next_stats = now + STATS_INTERVAL_S
        log.info(
            "stage progress",
            extra={"stage": self.stage.name, "worker": self.worker_id, **self._stats.fields()},
        )


def _names(partitions: list[TopicPartition]) -> list[str]:
    return [f"{tp.topic}[{tp.partition}]" for tp in partitions]
