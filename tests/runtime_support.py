"""Helpers for the stage-runtime tests: worker processes, topic readers, exactly-once checks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition
from confluent_kafka.admin import NewTopic

from labelflow.config import Settings
from labelflow.kafka.clients import admin_client, consumer, producer
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.topics import declared_topics, resolve, topic_name
from support import wait_for

LABELFLOW = str(Path(sys.executable).with_name("labelflow"))
SAMPLE_STAGES_DIR = Path(__file__).parent / "integration" / "runtime"


def item(key: str, seq: int) -> bytes:
    """A ``test.item`` event as it is on the wire (written by hand: the format is the test)."""
    return json.dumps(
        {"schema": "test.item", "version": 1, "data": {"key": key, "seq": seq}}
    ).encode()


def data(message: Message) -> dict:
    return json.loads(message.value())["data"]


class Worker:
    """One ``labelflow run`` process, its output in a log file."""

    def __init__(self, stage: str, worker_id: str, env: dict[str, str], log: Path) -> None:
        self.stage, self.worker_id, self.env, self.log = stage, worker_id, env, log
        level = env.get("LF_TEST_LOG_LEVEL", "INFO")
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [LABELFLOW, "--log-level", level, "run", f"sample_stages:{stage}",
                 "--worker-id", worker_id],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """SIGTERM, then the exit code; fails the test if the worker does not exit in time."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"{self.worker_id} ignored SIGTERM for {timeout_s} s") from None

    def restart(self) -> Worker:
        return Worker(self.stage, self.worker_id, self.env, self.log)

    def log_events(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line[:1] == "{"]


class Collector:
    """Reads a topic ``read_committed`` from the beginning, as a downstream consumer would."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.consumer = consumer(settings, f"collector-{uuid.uuid4().hex}")
        meta = admin_client(settings).list_topics(topic, timeout=10).topics[topic]
        self.partitions = [TopicPartition(topic, p) for p in meta.partitions]
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in meta.partitions])
        self.records: list[Message] = []

    def poll(self) -> int:
        self.records.extend(m for m in self.consumer.consume(1000, 0.1) if m.error() is None)
        return len(self.records)

    def wait_count(self, count: int, timeout_s: float = 60.0) -> None:
        wait_for(lambda: self.poll() >= count, timeout_s, f"{count} records in {self.topic}")

    def drain(self, timeout_s: float = 30.0) -> list[Message]:
        """Everything up to the end of the topic; call once its writers have stopped."""

        def caught_up() -> bool:
            self.poll()
            for tp in self.consumer.position(self.partitions):
                high = self.consumer.get_watermark_offsets(tp, timeout=5)[1]
                if high > 0 and tp.offset < high:
                    return False
            return True

        wait_for(caught_up, timeout_s, f"the end of {self.topic}")
        return self.records


@dataclass
class Pipeline:
    """Private topics (one prefix per test) and the workers running on them."""

    settings: Settings
    env: dict[str, str]
    workdir: Path
    workers: list[Worker] = field(default_factory=list)
    collectors: list[Collector] = field(default_factory=list)

    def create(self, *logical: str, partitions: int) -> None:
        """Our test topics, plus every declared topic (dead-letter, retry) under the prefix."""
        admin = admin_client(self.settings)
        names = [self.topic(t) for t in logical]
        futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
        for future in futures.values():
            future.result(timeout=30)
        ensure_topics(admin, resolve(declared_topics(self.settings), self.settings))

    def topic(self, logical: str) -> str:
        return topic_name(logical, self.settings)

    def produce(self, logical: str, records: Iterable[tuple[str, bytes]]) -> None:
        p = producer(self.settings)
        for key, value in records:
            p.produce(self.topic(logical), key=key.encode(), value=value)
            p.poll(0)
        assert p.flush(30) == 0

    def start(self, stage: str, worker_id: str, **env: str) -> Worker:
        worker = Worker(
            stage, worker_id, {**self.env, **env}, self.workdir / f"{stage}-{worker_id}.log"
        )
        self.workers.append(worker)
        return worker

    def restart(self, worker: Worker) -> Worker:
        fresh = worker.restart()
        self.workers.append(fresh)
        return fresh

    def collector(self, logical: str) -> Collector:
        collector = Collector(self.settings, self.topic(logical))
        self.collectors.append(collector)
        return collector

    def close(self) -> None:
        for worker in self.workers:
            if worker.proc.poll() is None:
                worker.kill()
        for collector in self.collectors:
            collector.consumer.close()


def make_pipeline(kafka_settings: Settings, workdir: Path, retry_delays_s: list[float]) -> Pipeline:
    prefix = f"{kafka_settings.topic_prefix}rt-{uuid.uuid4().hex[:8]}."
    settings = kafka_settings.model_copy(
        update={"topic_prefix": prefix, "retry_delays_s": retry_delays_s}
    )
    env = {
        **os.environ,
        "LABELFLOW_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "LABELFLOW_TOPIC_PREFIX": prefix,
        "LABELFLOW_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "LABELFLOW_RETRY_DELAYS_S": json.dumps(retry_delays_s),
        "LABELFLOW_SESSION_TIMEOUT_MS": "6000",
        "LABELFLOW_TRANSACTION_TIMEOUT_MS": "10000",
        "LABELFLOW_LOG_FORMAT": "json",
        "LABELFLOW_DATA_DIR": str(workdir),
        "LABELFLOW_CONFIG_FILE": str(workdir / "no-config.toml"),
        "LF_TEST_CONTROL_DIR": str(workdir),
        "LF_TEST_LOG_LEVEL": "DEBUG",
        "PYTHONPATH": str(SAMPLE_STAGES_DIR),
    }
    return Pipeline(settings, env, workdir)


def assert_exactly_once(records: list[Message], expected: dict[str, int], path: str) -> None:
    """Every (key, seq) for seq < expected[key] exactly once, in seq order per key, each
    having passed through the stages named by ``path``."""
    seen = Counter((data(m)["key"], data(m)["seq"]) for m in records)
    missing = [(k, s) for k, n in expected.items() for s in range(n) if (k, s) not in seen]
    duplicated = {ks: n for ks, n in seen.items() if n > 1}
    unexpected = [ks for ks in seen if ks[0] not in expected or ks[1] >= expected[ks[0]]]
    assert not missing, f"{len(missing)} lost, e.g. {missing[:5]}"
    assert not duplicated, f"{len(duplicated)} duplicated, e.g. {list(duplicated.items())[:5]}"
    assert not unexpected, f"unexpected records: {unexpected[:5]}"
    by_key: dict[str, list[int]] = {}
    for m in records:
        d = data(m)
        assert d["path"] == path, d
        by_key.setdefault(d["key"], []).append(d["seq"])
    for key, seqs in by_key.items():
        assert seqs == sorted(seqs), f"{key} out of order: {seqs[:20]}"
