"""The stage runner's loop, driven step by step against in-memory Kafka clients.

Each test scripts what every ``consume()`` call does: fetch records from the fake partitions'
logs, deliver given messages, fire rebalance callbacks, check the state between two calls.
When the script runs out the fake consumer keeps fetching from its positions, and stops the
runner once every input offset is committed. Nothing waits on the wall clock: the runner's
clock is a fake that only the stages move, so "the batch is due" happens exactly where a test
puts it.

The fakes keep the client contracts the runner relies on, and fail loudly when they are
broken: ``consume()`` never returns more than ``num_messages``; a producer must abort after an
abortable error before doing anything else; offsets may only be sent for partitions this
consumer owns (KIP-447 fencing); a seek only applies to an owned partition; outputs become
visible only when their transaction commits, and the committed offsets are exactly those sent
in a committed transaction.
"""

from __future__ import annotations

import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    TIMESTAMP_CREATE_TIME,
    KafkaError,
    KafkaException,
    TopicPartition,
)

import labelflow.kafka.runner as runner_module
from labelflow.config import Settings
from labelflow.kafka import retry
from labelflow.kafka.runner import OffsetRegression, Runner
from labelflow.stage import Output, Processor, Record, Result, Stage, TransientError
from labelflow.watchdog import Watchdog

Partition = tuple[str, int]
Headers = tuple[tuple[str, bytes], ...]

PREFIX = "t."
IN = PREFIX + "in"
OUT = PREFIX + "out"
RETRY_1 = PREFIX + "labelflow.retry.1"
DEAD_LETTER = PREFIX + "labelflow.deadletter"
P0: Partition = (IN, 0)
P1: Partition = (IN, 1)
R0: Partition = (RETRY_1, 0)

ABORTABLE = KafkaError(
    KafkaError._TIMED_OUT,
    "transaction commit timed out",
    fatal=False,
    retriable=False,
    txn_requires_abort=True,
)


# --- the fake cluster ---------------------------------------------------------------------
class FakeMessage:
    """What ``Consumer.consume`` returns: a record at an offset, or a consume error."""

    def __init__(
        self,
        where: Partition,
        offset: int,
        value: bytes | None = None,
        *,
        key: bytes | None = None,
        headers: Headers | None = None,
        error: KafkaError | None = None,
    ) -> None:
        self._where, self._offset, self._error = where, offset, error
        self._key = key if key is not None else f"k{offset}".encode()
        self._value = value if value is not None else f"{where[0]}/{where[1]}/{offset}".encode()
        self._headers = list(headers) if headers is not None else None

    def error(self) -> KafkaError | None:
        return self._error

    def topic(self) -> str:
        return self._where[0]

    def partition(self) -> int:
        return self._where[1]

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1_700_000_000_000 + self._offset


def consume_error() -> FakeMessage:
    """A non-fatal error librdkafka hands out through ``consume()`` like a message."""
    error = KafkaError(KafkaError._TRANSPORT, "broker connection lost", fatal=False)
    return FakeMessage(("", -1), -1, error=error)


def log_of(where: Partition, count: int) -> list[FakeMessage]:
    return [FakeMessage(where, offset) for offset in range(count)]


@dataclass(frozen=True)
class Published:
    topic: str
    key: bytes | None
    value: bytes
    headers: Headers

    def header(self, name: str) -> bytes | None:
        return dict(self.headers).get(name)


@dataclass
class Txn:
    """One producer transaction: what it produced and the offsets sent with it."""

    produced: list[Published] = field(default_factory=list)
    offsets: dict[Partition, int] = field(default_factory=dict)
    outcome: str = "open"  # "committed" or "aborted" once it ends


class Broker:
    """Input logs, and what committed transactions made visible."""

    def __init__(self, logs: dict[Partition, list[FakeMessage]]) -> None:
        self.logs = logs
        self.committed: dict[Partition, int] = {}
        self.published: list[Published] = []

    def publish(self, txn: Txn) -> None:
        self.published.extend(txn.produced)
        self.committed.update(txn.offsets)  # as sent: a backwards move stays visible

    def all_committed(self) -> bool:
        return all(self.committed.get(where, 0) == len(log) for where, log in self.logs.items())

    def on(self, topic: str) -> list[Published]:
        return [p for p in self.published if p.topic == topic]


Step = Callable[["FakeConsumer", int], list[FakeMessage]]
"""One action within a ``consume()`` call: given the consumer and how many more messages it
may return, what it returns."""


class FakeConsumer:
    """A consumer whose ``consume()`` calls follow a script (one tuple of steps per call)."""

    def __init__(self, broker: Broker, script: Iterable[Sequence[Step]], max_calls: int) -> None:
        self.broker = broker
        self.script = deque(script)
        self.max_calls = max_calls
        self.calls = 0
        self.positions: dict[Partition, int] = {}  # the assignment, with each position
        self.paused: set[Partition] = set()
        self.seeks: list[tuple[Partition, int]] = []
        self.group_metadata = object()
        self.closed = False
        self.runner: Runner | None = None
        self._on_assign: Callable[..., None] | None = None
        self._on_revoke: Callable[..., None] | None = None

    # what the runner calls
    def subscribe(
        self,
        topics: list[str],
        on_assign: Callable[..., None],
        on_revoke: Callable[..., None],
        on_lost: Callable[..., None],
    ) -> None:
        self.topics = topics
        self._on_assign, self._on_revoke = on_assign, on_revoke

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        assert not self.closed, "consume() after close()"
        self.calls += 1
        assert self.calls <= self.max_calls, (
            f"the runner never got everything committed: committed {self.broker.committed}, "
            f"positions {self.positions}"
        )
        steps = self.script.popleft() if self.script else (fetch_or_stop,)
        out: list[FakeMessage] = []
        for step in steps:
            out.extend(step(self, num_messages - len(out)))
        assert len(out) <= num_messages, "a consumer never returns more than num_messages"
        return out

    def seek(self, tp: TopicPartition) -> None:
        where = (tp.topic, tp.partition)
        assert where in self.positions, f"seek on {where}, which is not assigned"
        offset = 0 if tp.offset == OFFSET_BEGINNING else tp.offset
        assert offset >= 0, f"seek to {tp.offset}"
        self.positions[where] = offset
        self.seeks.append((where, offset))

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list:
        return [
            TopicPartition(
                tp.topic,
                tp.partition,
                self.broker.committed.get((tp.topic, tp.partition), OFFSET_INVALID),
            )
            for tp in partitions
        ]

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [
            TopicPartition(
                tp.topic, tp.partition, self.positions.get((tp.topic, tp.partition), OFFSET_INVALID)
            )
            for tp in partitions
        ]

    def get_watermark_offsets(
        self, tp: TopicPartition, timeout: float = -1, cached: bool = False
    ) -> tuple[int, int]:
        return 0, len(self.broker.logs.get((tp.topic, tp.partition), []))

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused.update((tp.topic, tp.partition) for tp in partitions)

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused.difference_update((tp.topic, tp.partition) for tp in partitions)

    def consumer_group_metadata(self) -> object:
        return self.group_metadata

    def close(self) -> None:
        # Leaving the group revokes what the consumer still owns, through the callback.
        if self.positions:
            self.revoke(*self.positions)
        self.closed = True

    # what the script does
    def assign(self, *partitions: Partition) -> None:
        for where in partitions:
            self.positions[where] = self.broker.committed.get(where, 0)
        assert self._on_assign is not None
        self._on_assign(self, [TopicPartition(*where) for where in partitions])

    def revoke(self, *partitions: Partition) -> None:
        assert self._on_revoke is not None
        # The callback runs while the partitions are still assigned, as in librdkafka.
        self._on_revoke(self, [TopicPartition(*where) for where in partitions])
        for where in partitions:
            del self.positions[where]
            self.paused.discard(where)

    def read(self, limit: int, partitions: Sequence[Partition] = ()) -> list[FakeMessage]:
        out: list[FakeMessage] = []
        for where in partitions or sorted(self.positions):
            assert where in self.positions, f"fetch from {where}, which is not assigned"
            if where in self.paused:
                continue
            log = self.broker.logs.get(where, [])
            while len(out) < limit and self.positions[where] < len(log):
                out.append(log[self.positions[where]])
                self.positions[where] += 1
        return out


def assign(*partitions: Partition) -> Step:
    def step(consumer: FakeConsumer, _budget: int) -> list[FakeMessage]:
        consumer.assign(*partitions)
        return []

    return step


def revoke(*partitions: Partition) -> Step:
    def step(consumer: FakeConsumer, _budget: int) -> list[FakeMessage]:
        consumer.revoke(*partitions)
        return []

    return step


def fetch(limit: int | None = None, *partitions: Partition) -> Step:
    """Up to ``limit`` records from the positions (of ``partitions``, or all assigned)."""

    def step(consumer: FakeConsumer, budget: int) -> list[FakeMessage]:
        return consumer.read(budget if limit is None else min(limit, budget), partitions)

    return step


def deliver(*messages: FakeMessage) -> Step:
    """Exactly these messages, whatever the positions (a consume error, a broken fetch)."""

    def step(_consumer: FakeConsumer, _budget: int) -> list[FakeMessage]:
        return list(messages)

    return step


def check(assertions: Callable[[], None]) -> Step:
    """Run ``assertions`` between two ``consume()`` calls: the state the runner left."""

    def step(_consumer: FakeConsumer, _budget: int) -> list[FakeMessage]:
        assertions()
        return []

    return step


def fetch_or_stop(consumer: FakeConsumer, budget: int) -> list[FakeMessage]:
    """After the script: fetch on, and stop the runner once every input offset is committed."""
    if consumer.broker.all_committed():
        assert consumer.runner is not None
        consumer.runner.stop()
        return []
    return consumer.read(budget)


class FakeProducer:
    """A transactional producer whose records become visible only when their transaction
    commits; ``commit_transaction`` fails with an abortable error on the calls numbered in
    ``fail_commits`` (1-based)."""

    def __init__(self, broker: Broker, consumer: FakeConsumer, fail_commits: Iterable[int]) -> None:
        self.broker = broker
        self.consumer = consumer
        self.fail_commits = set(fail_commits)
        self.initialized = False
        self.txns: list[Txn] = []
        self.commit_calls = 0
        self.abort_calls = 0
        self.must_abort = False

    @property
    def open_txn(self) -> Txn | None:
        return self.txns[-1] if self.txns and self.txns[-1].outcome == "open" else None

    def committed_txns(self) -> list[Txn]:
        return [t for t in self.txns if t.outcome == "committed"]

    def aborted_txns(self) -> list[Txn]:
        return [t for t in self.txns if t.outcome == "aborted"]

    def _usable(self, call: str) -> Txn:
        txn = self.open_txn
        assert txn is not None, f"{call} outside a transaction"
        assert not self.must_abort, f"{call} after an abortable error, before abort_transaction"
        return txn

    def init_transactions(self, timeout: float = -1) -> None:
        self.initialized = True

    def begin_transaction(self) -> None:
        assert self.initialized, "begin_transaction before init_transactions"
        assert self.open_txn is None, "begin_transaction while a transaction is open"
        self.txns.append(Txn())

    def produce(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._usable("produce").produced.append(
            Published(topic, key, value or b"", tuple(headers or ()))
        )

    def poll(self, timeout: float = 0) -> int:
        return 0

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], metadata: object, timeout: float = -1
    ) -> None:
        txn = self._usable("send_offsets_to_transaction")
        assert metadata is self.consumer.group_metadata
        for tp in offsets:
            where = (tp.topic, tp.partition)
            # KIP-447: the group coordinator refuses offsets from a member that lost them.
            assert where in self.consumer.positions, f"offsets sent for {where}, not owned"
            txn.offsets[where] = tp.offset

    def commit_transaction(self, timeout: float = -1) -> None:
        txn = self._usable("commit_transaction")
        self.commit_calls += 1
        if self.commit_calls in self.fail_commits:
            self.must_abort = True
            raise KafkaException(ABORTABLE)
        txn.outcome = "committed"
        self.broker.publish(txn)

    def abort_transaction(self, timeout: float = -1) -> None:
        txn = self.open_txn
        assert txn is not None, "abort_transaction outside a transaction"
        txn.outcome = "aborted"
        self.must_abort = False
        self.abort_calls += 1


class FakeClock:
    """The runner's ``time``: ``monotonic()`` moves only when a test moves it; ``time()`` is
    the real wall clock (retry due times are wall-clock, written by the retry policy)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return time.time()

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- harness ------------------------------------------------------------------------------
@dataclass
class Harness:
    runner: Runner
    broker: Broker
    consumer: FakeConsumer
    producer: FakeProducer
    watchdog: Watchdog
    exits: list[int]

    def run(self) -> None:
        try:
            self.runner.run()
        finally:
            assert self.exits == [], "the watchdog would have ended the worker"
            # Every bound the runner armed was released: a leaked one kills a real worker.
            assert not self.watchdog._deadlines
            assert self.consumer.closed

    def assert_offsets_only_moved_forward(self) -> None:
        last: dict[Partition, int] = {}
        for txn in self.producer.committed_txns():
            for where, offset in txn.offsets.items():
                assert offset >= last.get(where, 0), f"{where} moved back to {offset}: {last}"
                last[where] = offset
        assert last == {where: len(log) for where, log in self.broker.logs.items()}


Make = Callable[..., Harness]


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(runner_module, "time", fake)
    return fake


@pytest.fixture
def make(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, clock: FakeClock) -> Make:
    """Build a Runner on fakes: ``make(stage, logs, script, fail_commits=..., **settings)``."""
    for name in list(os.environ):
        if name.startswith("LABELFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("LABELFLOW_CONFIG_FILE", str(tmp_path / "absent.toml"))

    def build(
        stage: Stage,
        logs: dict[Partition, list[FakeMessage]],
        script: Iterable[Sequence[Step]],
        *,
        fail_commits: Iterable[int] = (),
        **settings: object,
    ) -> Harness:
        config = {
            "data_dir": tmp_path,
            "topic_prefix": PREFIX,
            "retry_delays_s": [1.0, 10.0],
            "batch_max_records": 5,
            "batch_max_ms": 1000,
            **settings,
        }
        broker = Broker(logs)
        consumer = FakeConsumer(broker, script, max_calls=100)
        producer = FakeProducer(broker, consumer, fail_commits)
        monkeypatch.setattr(runner_module, "producer", lambda _settings, _overrides: producer)
        monkeypatch.setattr(
            runner_module, "consumer", lambda _settings, _group, _overrides: consumer
        )
        exits: list[int] = []

        def exit_(code: int) -> None:
            exits.append(code)
            raise AssertionError(f"watchdog ended the worker with exit code {code}")

        watchdog = Watchdog("test", exit=exit_)
        runner = Runner(stage, Settings(**config), worker_id="w0", watchdog=watchdog)
        consumer.runner = runner
        return Harness(runner, broker, consumer, producer, watchdog, exits)

    return build


Calls = Counter[tuple[str, int, int]]


def echo(calls: Calls, clock: FakeClock | None = None, cost_s: float = 0.0) -> Stage:
    """A stage writing ``out:<value>`` per record, counting its calls per input offset;
    each record moves the runner's clock by ``cost_s``."""

    def process(record: Record) -> list[Output]:
        calls[(record.topic, record.partition, record.offset)] += 1
        if clock is not None:
            clock.advance(cost_s)
        return [Output("out", b"out:" + record.value, key=record.key)]

    return Stage("echo", inputs=("in",), outputs=("out",), process=process)


def assert_each_output_once(broker: Broker) -> None:
    expected = Counter(b"out:" + (m.value() or b"") for log in broker.logs.values() for m in log)
    assert Counter(p.value for p in broker.on(OUT)) == expected


def assert_no_output_of(txn: Txn, broker: Broker) -> None:
    """None of the records ``txn`` produced became visible (a redo produces equal ones)."""
    assert txn.produced
    visible = {id(p) for p in broker.published}
    assert not [p for p in txn.produced if id(p) in visible]


# --- the tests ----------------------------------------------------------------------------
def test_abort_mid_fetch_drops_the_rest_of_the_fetch_and_redoes_from_committed(
    make: Make, clock: FakeClock
) -> None:
    # consume() is never asked for more records than the batch has room for, so a fetch
    # outgrows its batch in time: each record costs 60 ms of the runner's clock and a batch
    # is due after 200 ms. Once the cost is measured chunks are 4 records (a 250 ms budget)
    # and each one makes the batch due, so the second fetch (12 records) commits in pieces.
    calls: Calls = Counter()
    h = make(
        echo(calls, clock, cost_s=0.06),
        {P0: log_of(P0, 20)},
        [
            (assign(P0), fetch(3)),  # 0..2, committed at 3 (commit 1)
            (fetch(12),),  # 3..14: the commit after its first chunk fails (commit 2)
        ],
        fail_commits={2},
        batch_max_records=100,
        batch_max_ms=200,
    )
    h.run()

    assert_each_output_once(h.broker)
    h.assert_offsets_only_moved_forward()
    (aborted,) = h.producer.aborted_txns()
    assert h.producer.abort_calls == 1
    assert_no_output_of(aborted, h.broker)
    aborted_upto = aborted.offsets[P0]
    assert 3 < aborted_upto < 15, "the abort did not land inside the second fetch"
    assert h.consumer.seeks == [(P0, 3)], "not rewound to the committed offset"
    redone = set(range(3, aborted_upto))
    # Only the aborted records ran twice; the rest of that fetch was dropped unprocessed.
    assert calls == {(IN, 0, o): 2 if o in redone else 1 for o in range(20)}


def test_revoke_during_an_open_batch_aborts_it_and_drops_that_fetch(make: Make) -> None:
    calls: Calls = Counter()
    h: Harness

    def after_revoke() -> None:
        # The batch holding P0 2..4 and P1 1 was aborted, nothing of it is visible.
        assert h.producer.abort_calls == 1
        (aborted,) = h.producer.aborted_txns()
        assert {m.value for m in aborted.produced} == {
            b"out:" + v for v in (b"t.in/0/2", b"t.in/0/3", b"t.in/0/4", b"t.in/1/1")
        }
        assert_no_output_of(aborted, h.broker)
        assert len(h.broker.published) == 3
        # The partition kept was rewound to its committed offset, the revoked one left alone.
        assert {where for where, _ in h.consumer.seeks} == {P1}
        assert h.consumer.positions == {P1: h.broker.committed[P1]} == {P1: 1}
        # P1 2, returned by the call that revoked, was dropped without being processed.
        assert calls[(IN, 1, 2)] == 0

    h = make(
        echo(calls),
        {P0: log_of(P0, 6), P1: log_of(P1, 6)},
        [
            (assign(P0, P1), fetch(2, P0), fetch(1, P1)),  # committed at P0 2, P1 1
            # 4 records and an error fill the fetch (5 = batch_max_records): the batch of 4
            # stays open, waiting for more.
            (fetch(3, P0), fetch(1, P1), deliver(consume_error())),
            # A record fetched before the rebalance, then P0 is revoked.
            (fetch(1, P1), revoke(P0)),
            (check(after_revoke), assign(P0)),
        ],
    )
    h.run()

    assert_each_output_once(h.broker)
    h.assert_offsets_only_moved_forward()
    assert h.producer.abort_calls == 1
    twice = {(IN, 0, 2), (IN, 0, 3), (IN, 0, 4), (IN, 1, 1)}
    assert calls == {
        (topic, part, o): 2 if (topic, part, o) in twice else 1
        for topic, part in (P0, P1)
        for o in range(6)
    }


def failure_headers(stage: str, attempts: int = 1) -> list[tuple[str, bytes]]:
    """The headers the runner writes on a retry record of ``stage``, due a minute ago."""
    now = datetime.now(UTC)
    failure = retry.Failure(
        stage=stage,
        error_type="transient",
        code="test.flaky",
        message="it failed",
        attempts=attempts,
        original_topic=IN,
        original_partition=0,
        original_offset=7,
        first_failure=now,
        last_failure=now,
    )
    due = str(int((time.time() - 60) * 1000)).encode()
    return [("trace", b"abc"), *failure.headers(), (retry.DUE_MS, due)]


def test_damaged_retry_headers_are_dead_lettered_and_other_stages_retries_skipped(
    make: Make,
) -> None:
    damaged = [
        (k, b"x" if k == retry.ATTEMPTS else v) for k, v in failure_headers("echo", attempts=1)
    ]
    retries = [
        FakeMessage(R0, 0, b"damaged", key=b"d", headers=tuple(damaged)),
        FakeMessage(R0, 1, b"theirs", key=b"o", headers=tuple(failure_headers("other"))),
        FakeMessage(R0, 2, b"ours", key=b"r", headers=tuple(failure_headers("echo"))),
    ]
    seen: list[Record] = []

    def process(record: Record) -> list[Output]:
        seen.append(record)
        return [Output("out", b"out:" + record.value, key=record.key)]

    stage = Stage("echo", inputs=("in",), outputs=("out",), process=process)
    h = make(stage, {R0: retries}, [(assign(R0), fetch())])
    h.run()

    # Only our intact retry record reached the stage, as the original it stands for.
    assert [(r.topic, r.partition, r.offset, r.attempt, r.value) for r in seen] == [
        (IN, 0, 7, 1, b"ours")
    ]
    assert [p.value for p in h.broker.on(OUT)] == [b"out:ours"]
    (letter,) = h.broker.on(DEAD_LETTER)
    assert (letter.key, letter.value) == (b"d", b"damaged")
    assert letter.header(retry.ERROR_CODE) == b"retry.headers_damaged"
    assert letter.header(retry.ERROR_TYPE) == b"permanent"
    assert letter.header(retry.STAGE) == b"echo"
    assert letter.header("trace") == b"abc"
    assert {p.topic for p in h.broker.published} == {OUT, DEAD_LETTER}
    # The other stage's record was passed over, and its offset committed all the same.
    assert h.broker.committed == {R0: 3}
    assert len(h.producer.committed_txns()) == 1


class AllOrNothing(Processor):
    """Fails a whole chunk when any record in it is bad; alone, only the bad one fails."""

    def __init__(self) -> None:
        self.chunks: list[list[int]] = []

    def process(self, records: Sequence[Record]) -> list[Result]:
        self.chunks.append([r.offset for r in records])
        if any(r.key == b"bad" for r in records):
            raise TransientError("test.flaky", "the chunk's database transaction failed")
        return [[Output("out", b"out:" + r.value, key=r.key)] for r in records]


def test_a_chunk_failing_as_a_whole_is_retried_record_by_record(make: Make) -> None:
    processor = AllOrNothing()
    log = log_of(P0, 5)
    log[2] = FakeMessage(P0, 2, b"poison", key=b"bad")
    stage = Stage("echo", inputs=("in",), outputs=("out",), setup=lambda _s: processor)
    h = make(stage, {P0: log}, [(assign(P0), fetch())])
    h.run()

    assert processor.chunks == [[0, 1, 2, 3, 4], [0], [1], [2], [3], [4]]
    good = [m for m in log if m.key() != b"bad"]
    assert [p.value for p in h.broker.on(OUT)] == [b"out:" + (m.value() or b"") for m in good]
    (retried,) = h.broker.on(RETRY_1)
    assert (retried.key, retried.value) == (b"bad", b"poison")
    assert retried.header(retry.ERROR_CODE) == b"test.flaky"
    assert retried.header(retry.ORIGINAL_OFFSET) == b"2"
    assert retried.header(retry.ATTEMPTS) == b"1"
    assert h.broker.on(DEAD_LETTER) == []
    assert h.broker.committed == {P0: 5}


def test_an_offset_seen_twice_in_one_batch_stops_the_worker_uncommitted(make: Make) -> None:
    calls: Calls = Counter()
    log = log_of(P0, 3)
    h = make(echo(calls), {P0: log}, [(assign(P0), deliver(log[0], log[1], log[1]))])
    with pytest.raises(OffsetRegression):
        h.run()

    assert h.producer.commit_calls == 0
    assert h.broker.published == []
    assert h.broker.committed == {}


class FlakyFlush(Processor):
    """Outputs every record; its second flush (durability point) fails."""

    def __init__(self, calls: Calls) -> None:
        self.calls = calls
        self.flushes = 0
        self.discards = 0
        self.closed = False

    def process_one(self, record: Record) -> list[Output]:
        self.calls[(record.topic, record.partition, record.offset)] += 1
        return [Output("out", b"out:" + record.value, key=record.key)]

    def flush(self) -> None:
        self.flushes += 1
        if self.flushes == 2:
            raise OSError("blob store: no space left on device")

    def discard(self) -> None:
        self.discards += 1

    def close(self) -> None:
        self.closed = True


def test_a_failing_flush_aborts_the_batch_and_it_is_redone(make: Make) -> None:
    calls: Calls = Counter()
    processor = FlakyFlush(calls)
    stage = Stage("echo", inputs=("in",), outputs=("out",), setup=lambda _s: processor)
    h = make(stage, {P0: log_of(P0, 8)}, [(assign(P0), fetch(3)), (fetch(3),)])
    h.run()

    assert_each_output_once(h.broker)
    h.assert_offsets_only_moved_forward()
    (aborted,) = h.producer.aborted_txns()
    assert_no_output_of(aborted, h.broker)
    assert aborted.offsets == {}, "offsets were sent although the side effects were not durable"
    assert (processor.discards, h.producer.abort_calls) == (1, 1)
    assert h.consumer.seeks == [(P0, 3)]
    assert calls == {(IN, 0, o): 2 if o in (3, 4, 5) else 1 for o in range(8)}
    assert processor.closed
