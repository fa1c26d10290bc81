"""Throughput of the stage runner vs a plain consume→produce loop without transactions.

Both move the same 1 KB records from one topic to another, one worker each, on a private
local broker started here; each is timed from its start until a ``read_committed`` reader
has seen every output, so the runner pays for its transactions and the plain loop for
nothing but consuming and producing. Prints records/s for both and their ratio.

    .venv/bin/python bench/runner_throughput.py [--records 50000]
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, TopicPartition
from confluent_kafka.admin import NewTopic

from labelflow.config import Settings
from labelflow.kafka.broker import LocalBroker, port_is_free
from labelflow.kafka.clients import admin_client, consumer, producer
from labelflow.kafka.runner import Runner
from labelflow.stage import Output, Record, Stage

PARTITIONS = 4
RECORD_BYTES = 1024


def _free_port() -> int:
    port = 20000 + uuid.uuid4().int % 20000
    return port if port_is_free("127.0.0.1", port) else _free_port()


def _create(settings: Settings, *names: str) -> None:
    admin = admin_client(settings)  # kept alive until the futures resolve
    futures = admin.create_topics([NewTopic(n, PARTITIONS, 1) for n in names])
    for future in futures.values():
        future.result(timeout=30)


def _fill(settings: Settings, topic: str, count: int) -> None:
    p = producer(settings, {"linger.ms": 20})
    value = b"x" * RECORD_BYTES
    for i in range(count):
        while True:
            try:
                p.produce(topic, key=str(i % 1000).encode(), value=value)
                break
            except BufferError:
                p.poll(0.05)
    p.flush(60)


def _wait_for_outputs(settings: Settings, topic: str, count: int, done: threading.Event) -> None:
    reader = consumer(settings, f"bench-reader-{uuid.uuid4().hex}")
    reader.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    seen = 0
    while seen < count:
        seen += sum(1 for m in reader.consume(10_000, 0.2) if m.error() is None)
    reader.close()
    done.set()


def _timed(
    settings: Settings, out: str, count: int, work: Callable[[threading.Event], None]
) -> float:
    done = threading.Event()
    watcher = threading.Thread(target=_wait_for_outputs, args=(settings, out, count, done))
    watcher.start()
    started = time.perf_counter()
    work(done)
    watcher.join()
    return time.perf_counter() - started


def plain_loop(settings: Settings, src: str, out: str, done: threading.Event) -> None:
    """What one would write without the runner: at-least-once, offsets auto-committed."""
    c = consumer(settings, f"bench-plain-{uuid.uuid4().hex}", {"enable.auto.commit": True})
    p = producer(settings)
    c.subscribe([src])
    while not done.is_set():
        for m in c.consume(1000, 0.1):
            if m.error() is None:
                while True:
                    try:
                        p.produce(out, key=m.key(), value=m.value())
                        break
                    except BufferError:
                        p.poll(0.05)
        p.poll(0)
    p.flush(30)
    c.close()


def passthrough(record: Record) -> Iterator[Output]:
    yield Output("out", record.value, key=record.key)


def runner_loop(settings: Settings, run_id: str, done: threading.Event) -> None:
    stage = Stage("bench", inputs=("in",), outputs=("out",), process=passthrough, group=run_id)
    runner = Runner(stage, settings)
    threading.Thread(target=lambda: (done.wait(), runner.stop()), daemon=True).start()
    runner.run()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(
            data_dir=Path(tmp),
            kafka_port=_free_port(),
            kafka_controller_port=_free_port(),
            topic_partitions=PARTITIONS,
            retry_delays_s=[],
        )
        broker = LocalBroker(base)
        broker.up()
        try:
            plain = base.model_copy(update={"topic_prefix": "plain."})
            ours = base.model_copy(update={"topic_prefix": "runner."})
            _create(base, "plain.in", "plain.out", "runner.in", "runner.out")
            _fill(base, "plain.in", args.records)
            _fill(base, "runner.in", args.records)
            plain_s = _timed(
                plain, "plain.out", args.records,
                lambda done: plain_loop(plain, "plain.in", "plain.out", done),
            )  # fmt: skip
            runner_s = _timed(
                ours, "runner.out", args.records,
                lambda done: runner_loop(ours, f"bench-{uuid.uuid4().hex}", done),
            )  # fmt: skip
        finally:
            broker.down()
    plain_rate, runner_rate = args.records / plain_s, args.records / runner_s
    print(f"records: {args.records} x {RECORD_BYTES} B, {PARTITIONS} partitions, one worker")
    print(f"plain consume→produce (no transactions): {plain_rate:10,.0f} records/s")
    print(f"stage runner (exactly-once):             {runner_rate:10,.0f} records/s")
    print(f"ratio runner/plain:                      {runner_rate / plain_rate:10.2f}")


if __name__ == "__main__":
    main()
