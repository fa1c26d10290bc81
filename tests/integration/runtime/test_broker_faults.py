"""The runtime against a broker that goes away: stopped, frozen mid-commit, or aborting a
transaction itself. In each case the workers run under the real supervisor, as in ``up`` and
the demo, and the pipeline must recover with nobody stepping in: every record exactly once.

Each test has a private broker, since stopping the session's broker would fail other tests.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from labelflow.config import Settings
from labelflow.kafka.broker import LocalBroker
from labelflow.supervisor import Supervisor
from labelflow.watchdog import EXIT_HUNG
from runtime_support import Collector, Pipeline, assert_exactly_once, item, make_pipeline
from support import local_broker_settings, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        bool(os.environ.get("LABELFLOW_KAFKA_BOOTSTRAP")),
        reason="stops and restarts a broker of its own",
    ),
]

KEYS, PER_KEY = 20, 100
RECOVERY_TIMEOUT_S = 180.0
"""Restarting workers back off (1, 2, 5, 10, 30 s) while the broker is down; recovery takes
tens of seconds, and far more than this means it did not recover at all."""


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[LocalBroker]:
    settings = local_broker_settings(tmp_path / "broker")
    broker = LocalBroker(settings)
    broker.up()
    try:
        yield broker
    finally:
        broker.down(force=True)


@pytest.fixture
def pipeline(broker: LocalBroker, tmp_path: Path) -> Iterator[Pipeline]:
    settings: Settings = broker.settings.model_copy(update={"kafka_bootstrap": broker.bootstrap})
    p = make_pipeline(settings, tmp_path, [1.0, 1.0])
    try:
        yield p
    finally:
        p.close()


def _supervised(pipeline: Pipeline, replicas: int, **env: str) -> Supervisor:
    supervisor = Supervisor(
        {"sample_stages:first": replicas},
        log_dir=pipeline.workdir / "logs",
        env={**pipeline.env, **env},
    )
    supervisor.start()
    return supervisor


def _feed(pipeline: Pipeline, prefix: str = "k") -> None:
    pipeline.create("in", "mid", partitions=4)
    pipeline.produce(
        "in",
        [(f"{prefix}{k}", item(f"{prefix}{k}", s)) for s in range(PER_KEY) for k in range(KEYS)],
    )


def _wait_all(mid: Collector, supervisor: Supervisor, count: int) -> float:
    """Seconds until ``count`` records are in ``mid``, restarting dead workers meanwhile
    (the supervisor's job in ``up``)."""
    started = time.monotonic()

    def arrived() -> bool:
        supervisor.check()
        return mid.poll() >= count

    wait_for(arrived, RECOVERY_TIMEOUT_S, f"{count} records in {mid.topic}")
    return time.monotonic() - started


def _outage(supervisor: Supervisor, seconds: float) -> None:
    """Keep supervising for ``seconds`` while the broker is away."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervisor.check()
        time.sleep(0.2)


def _assert_stopped(codes: dict[str, int | None]) -> None:
    """Every worker stopped cleanly on SIGTERM, or, if its last Kafka call hung (librdkafka
    can stay wedged in a transactional call after a broker restart), its watchdog ended it:
    exactly the exit the supervisor restarts from."""
    assert set(codes.values()) <= {0, EXIT_HUNG}, codes


def _survives(
    pipeline: Pipeline,
    broker: LocalBroker,
    record_property: pytest.RecordProperty,
    outage: Callable[[Supervisor], None],
    batch_max_ms: int,
) -> None:
    """Run two supervised workers, cause ``outage`` once 300 records are through, start the
    broker again, and check every record arrives exactly once; records the recovery time."""
    _feed(pipeline)
    supervisor = _supervised(
        pipeline, 2, LF_TEST_DELAY_MS="3", LABELFLOW_BATCH_MAX_MS=str(batch_max_ms)
    )
    mid = pipeline.collector("mid")
    try:
        mid.wait_count(300)
        outage(supervisor)
        broker.up()
        recovery_s = _wait_all(mid, supervisor, KEYS * PER_KEY)
        record_property("recovery_s", round(recovery_s, 1))
        print(f"recovered {recovery_s:.1f} s after the broker was back")
    finally:
        codes = supervisor.stop()
    assert_exactly_once(mid.drain(), {f"k{k}": PER_KEY for k in range(KEYS)}, path="a")
    _assert_stopped(codes)


def test_broker_stopped_longer_than_every_timeout_then_back(
    pipeline: Pipeline, broker: LocalBroker, record_property: pytest.RecordProperty
) -> None:
    def stop_for_a_while(supervisor: Supervisor) -> None:
        broker.down()
        # Longer than the session (6 s) and transaction (10 s) timeouts of the workers.
        _outage(supervisor, 15.0)

    _survives(pipeline, broker, record_property, stop_for_a_while, batch_max_ms=200)


def test_broker_killed_while_commits_are_in_flight(
    pipeline: Pipeline, broker: LocalBroker, record_property: pytest.RecordProperty
) -> None:
    def freeze_then_kill(supervisor: Supervisor) -> None:
        pid = broker.pid()
        assert pid is not None
        # Frozen, the broker answers nothing: every worker's next commit (due every 100 ms)
        # is left waiting on it. Then it dies with those commits in flight.
        os.kill(pid, signal.SIGSTOP)
        _outage(supervisor, 3.0)
        broker.down(force=True)

    _survives(pipeline, broker, record_property, freeze_then_kill, batch_max_ms=100)


def test_transaction_aborted_by_the_broker_is_redone(pipeline: Pipeline) -> None:
    (pipeline.workdir / "stall").touch()
    _feed(pipeline)
    # Behind the others on its partition, so its transaction already holds outputs: the
    # stage hangs once for longer than the transaction timeout, and the broker aborts that
    # transaction and bumps the producer's epoch under the worker's feet.
    pipeline.produce("in", [("stall0", item("stall0", s)) for s in range(PER_KEY)])
    supervisor = _supervised(
        pipeline,
        1,
        LF_TEST_STALL_S="8",
        LABELFLOW_TRANSACTION_TIMEOUT_MS="3000",
        LABELFLOW_BATCH_MAX_MS="60000",
        LABELFLOW_BATCH_MAX_RECORDS="5000",
    )
    mid = pipeline.collector("mid")
    try:
        _wait_all(mid, supervisor, (KEYS + 1) * PER_KEY)
    finally:
        codes = supervisor.stop()
    assert not (pipeline.workdir / "stall").exists(), "the stage never stalled"
    [worker] = supervisor.workers
    log = worker.log_file.read_text()
    assert worker.restarts > 0 or "transaction aborted" in log, "the broker aborted nothing"
    expected = {f"k{k}": PER_KEY for k in range(KEYS)} | {"stall0": PER_KEY}
    assert_exactly_once(mid.drain(), expected, path="a")
    _assert_stopped(codes)
