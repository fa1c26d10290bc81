"""Exactly-once through crashes, graceful stops and rebalances, with real worker processes."""

from __future__ import annotations

import random

from runtime_support import Pipeline, Worker, assert_exactly_once, item
from support import wait_for


def _inputs(keys: int, per_key: int) -> list[tuple[str, bytes]]:
    return [(f"k{k}", item(f"k{k}", seq)) for seq in range(per_key) for k in range(keys)]


def _assigned(worker: Worker) -> bool:
    return any(e["event"] == "partitions assigned" for e in worker.log_events())


def test_killed_workers_lose_and_duplicate_nothing(pipeline: Pipeline) -> None:
    keys, per_key = 100, 100
    total = keys * per_key
    pipeline.create("in", "mid", "out", partitions=4)
    pipeline.produce("in", _inputs(keys, per_key))
    # Slow, small batches: both stages are mid-transaction most of the time the kills happen.
    slow = {"LF_TEST_DELAY_MS": "0.3", "LABELFLOW_BATCH_MAX_RECORDS": "500"}
    workers = {
        "first": pipeline.start("first", "w0", **slow),
        "second": pipeline.start("second", "w0", **slow),
    }
    progress = {"first": pipeline.collector("mid"), "second": pipeline.collector("out")}
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    kills = sorted(
        (rng.randint(low, high), stage)
        for stage in ("first", "second")
        for low, high in ((300, 3500), (4500, 8500))
    )
    for threshold, stage in kills:
        progress[stage].wait_count(threshold, timeout_s=60)
        workers[stage].kill()
        workers[stage] = pipeline.restart(workers[stage])

    progress["second"].wait_count(total, timeout_s=90)
    assert {stage: w.terminate() for stage, w in workers.items()} == {"first": 0, "second": 0}
    records = progress["second"].drain()
    assert_exactly_once(records, {f"k{k}": per_key for k in range(keys)}, path="ab"), seed


def test_sigterm_mid_batch_commits_it_and_exits_zero(pipeline: Pipeline) -> None:
    keys, per_key = 30, 100
    pipeline.create("in", "mid", partitions=2)
    pipeline.produce("in", _inputs(keys, per_key))
    big_slow_batches = {
        "LF_TEST_DELAY_MS": "2",
        "LABELFLOW_BATCH_MAX_RECORDS": "300",
        "LABELFLOW_BATCH_MAX_MS": "60000",
    }
    worker = pipeline.start("first", "w0", **big_slow_batches)
    mid = pipeline.collector("mid")
    mid.wait_count(300)

    assert worker.terminate() == 0
    events = worker.log_events()
    stopping = [e for e in events if e["event"] == "stopping: committing the open batch"]
    assert stopping and stopping[0]["records"] > 0, "the stop did not land inside a batch"
    assert len(mid.drain()) < keys * per_key, "the worker finished everything before the stop"

    rest = pipeline.start("first", "w0")  # same id, everyday batch settings
    mid.wait_count(keys * per_key)
    assert rest.terminate() == 0
    assert_exactly_once(mid.drain(), {f"k{k}": per_key for k in range(keys)}, path="a")


def test_rebalances_while_processing_keep_exactly_once(pipeline: Pipeline) -> None:
    keys, per_key = 40, 100
    pipeline.create("in", "mid", partitions=4)
    pipeline.produce("in", _inputs(keys, per_key))
    # Batches that are nearly always open, so that rebalances interrupt them.
    slow = {
        "LF_TEST_DELAY_MS": "2",
        "LABELFLOW_BATCH_MAX_RECORDS": "250",
        "LABELFLOW_BATCH_MAX_MS": "5000",
    }
    one, two = pipeline.start("first", "w1", **slow), pipeline.start("first", "w2", **slow)
    mid = pipeline.collector("mid")

    mid.wait_count(500)
    three = pipeline.start("first", "w3", **slow)
    wait_for(lambda: _assigned(three), 30, "the third worker to get partitions")
    mid.wait_count(mid.poll() + 300)
    assert one.terminate() == 0

    mid.wait_count(keys * per_key)
    assert two.terminate() == 0
    assert three.terminate() == 0
    assert_exactly_once(mid.drain(), {f"k{k}": per_key for k in range(keys)}, path="a")
