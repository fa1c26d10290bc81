"""Helpers for the pipeline tests: validate, materialize and commit as supervised worker
processes on private topics, and ways to read what they wrote.

Every run gets its own topic prefix, data directory (blobs, synthetic imagery cache) and
catalog, so runs in one session never see each other's records. Waits poll a condition with a
deadline and fail early, with the worker's log, when a worker process died.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from confluent_kafka import Message
from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.events import decode
from labelflow.kafka.clients import admin_client
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.retry import Failure
from labelflow.kafka.topics import Topic, declared_topics, resolve, topic_name
from labelflow.model import Quarantined
from labelflow.sources.publish import RawPublisher
from labelflow.sources.synthetic import Delivery, ExpectedTask
from labelflow.stages import PIPELINE_STAGES
from labelflow.supervisor import Supervisor
from runtime_support import Collector

RETRY_DELAYS_S = [0.2, 0.5, 1.0]
"""Short enough that a retried record comes back within a second; three of them, so a record
that fails twice still has a try left before the dead-letter topic."""

STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.25
"""Between checks of a condition that queries the catalog: often enough to end a wait soon
after it holds, rarely enough not to compete with the workers for the CPU."""

LOG_TAIL_CHARS = 3000


@dataclass
class RunningPipeline:
    """One pipeline: its settings (as the workers see them), its workers and its catalog."""

    settings: Settings
    supervisor: Supervisor
    catalog: Catalog
    collectors: list[Collector] = field(default_factory=list)
    _publisher: RawPublisher | None = None

    def topic(self, logical: str) -> str:
        return topic_name(logical, self.settings)

    # --- input -----------------------------------------------------------------------
    def publish(self, deliveries: Iterable[Delivery]) -> int:
        """Hand deliveries to ``annotations.raw`` as a source would; returns how many."""
        sent = 0
        for delivery in deliveries:
            self.publish_raw(delivery.task_id, delivery.value)
            sent += 1
        self.flush()
        return sent

    def publish_raw(self, key: str, value: bytes) -> None:
        if self._publisher is None:
            self._publisher = RawPublisher(self.settings)
        self._publisher.publish_raw(key, value)

    def flush(self) -> None:
        if self._publisher is not None:
            self._publisher.flush()

    # --- output ----------------------------------------------------------------------
    def collector(self, logical: str) -> Collector:
        """A ``read_committed`` reader of a topic of this pipeline, from its beginning."""
        collector = Collector(self.settings, self.topic(logical))
        self.collectors.append(collector)
        return collector

    def quarantined(self, collector: Collector) -> list[tuple[bytes | None, Quarantined]]:
        """``(key, record)`` of everything ``collector`` read from the quarantine topic."""
        out = []
        for message in collector.records:
            held = decode(message.value())
            assert isinstance(held, Quarantined), held
            out.append((message.key(), held))
        return out

    # --- waiting ---------------------------------------------------------------------
    def assert_workers_alive(self) -> None:
        for worker in self.supervisor.workers:
            if worker.process is not None and worker.process.poll() is not None:
                pytest.fail(
                    f"worker {worker.worker_id} exited with {worker.process.returncode}:\n"
                    + log_tail(worker.log_file)
                )

    def eventually(self, problems: Callable[[], list[str]], timeout_s: float, what: str) -> None:
        """Poll until ``problems()`` is empty; fail after ``timeout_s`` showing some of them."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.assert_workers_alive()
            found = problems()
            if not found:
                return
            if time.monotonic() > deadline:
                pytest.fail(
                    f"{what}: after {timeout_s:.0f} s still {len(found)} problem(s), "
                    f"e.g. {found[:8]}"
                )
            time.sleep(POLL_INTERVAL_S)

    def wait_count(self, collector: Collector, count: int, timeout_s: float) -> None:
        def missing() -> list[str]:
            got = collector.poll()
            return [] if got >= count else [f"{got} of {count} records in {collector.topic}"]

        self.eventually(missing, timeout_s, f"{count} records in {collector.topic}")

    # --- teardown --------------------------------------------------------------------
    def stop(self) -> dict[str, int | None]:
        """Stop the workers (SIGTERM, each commits its batch) and close our clients."""
        codes = self.supervisor.stop(timeout_s=STOP_TIMEOUT_S)
        for collector in self.collectors:
            collector.consumer.close()
        self.catalog.close()
        return codes


def log_tail(path: Path) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no log)"
    return text[-LOG_TAIL_CHARS:]


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a worker process: this test's broker, topics, storage and timings."""
    env = {
        **os.environ,
        "LABELFLOW_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
        "LABELFLOW_TOPIC_PREFIX": settings.topic_prefix,
        "LABELFLOW_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "LABELFLOW_RETRY_DELAYS_S": json.dumps(settings.retry_delays_s),
        "LABELFLOW_DATA_DIR": str(settings.data_dir),
        "LABELFLOW_CATALOG_URL": settings.resolved_catalog_url,
        # A labelflow.toml in the directory pytest runs from must not change the workers.
        "LABELFLOW_CONFIG_FILE": str(settings.data_dir / "no-config.toml"),
        # Commit often: three stages in a row each add up to one batch of latency.
        "LABELFLOW_BATCH_MAX_MS": "300",
        # The runner checks a batch's age only between fetched chunks of up to this many
        # records; a chunk of slow records (materialize: a chip read and two blob writes each)
        # must finish well within the transaction timeout, or the broker fences the worker.
        "LABELFLOW_BATCH_MAX_RECORDS": "200",
        # A worker killed by a failing test must not hold its partitions for long.
        "LABELFLOW_SESSION_TIMEOUT_MS": "6000",
    }
    env.update(extra)
    return env


def run_pipeline(
    kafka_settings: Settings,
    workdir: Path,
    catalog_url: str | None = None,
    env: dict[str, str] | None = None,
) -> RunningPipeline:
    """Create this run's topics, migrate its catalog and start one worker per stage."""
    data_dir = workdir / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": f"{kafka_settings.topic_prefix}pl-{uuid.uuid4().hex[:8]}.",
            "retry_delays_s": RETRY_DELAYS_S,
            "data_dir": data_dir,
            "catalog_url": catalog_url,
        }
    )
    ensure_topics(admin_client(settings), resolve(declared_topics(settings), settings))
    catalog = Catalog(settings.resolved_catalog_url)
    catalog.migrate()
    supervisor = Supervisor(
        stages=dict.fromkeys(PIPELINE_STAGES, 1),
        log_dir=workdir / "logs",
        env=worker_env(settings, **(env or {})),
    )
    supervisor.start()
    return RunningPipeline(settings, supervisor, catalog)


def catalog_problems(catalog: Catalog, expected: dict[str, ExpectedTask]) -> list[str]:
    """How the catalog differs from the expected final state; empty when it matches."""
    live: dict[str, int] = {}
    after = None
    while page := catalog.list(after=after):
        live.update((v.sample_id, v.revision) for v in page)
        after = page[-1].sample_id
    problems = [f"{sid}: live but not expected" for sid in live.keys() - expected.keys()]
    for task in expected.values():
        if task.sample and live.get(task.task_id) != task.revision:
            problems.append(f"{task.task_id}: want r{task.revision}, live {live.get(task.task_id)}")
    if problems:
        return problems  # the cheap check first; the per-sample one only once it passes
    for task in expected.values():
        if task.sample:
            continue
        state = catalog.state(task.task_id)
        if state is None or not state.deleted or state.revision != task.revision:
            problems.append(f"{task.task_id}: want deleted at r{task.revision}, got {state}")
    return problems


def set_topic_config(settings: Settings, topic: str, name: str, value: str) -> None:
    """Change one setting of an existing topic (``max.message.bytes``, say)."""
    resource = ConfigResource(
        ResourceType.TOPIC,
        topic,
        incremental_configs=[ConfigEntry(name, value, incremental_operation=AlterConfigOpType.SET)],
    )
    admin = admin_client(settings)  # held until the answers are in: a dropped client aborts
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def failure(message: Message) -> Failure:
    """The failure a retry or dead-letter record carries in its headers."""
    found = Failure.from_headers(message.headers() or [])
    assert found is not None, f"no failure headers on {message.topic()}: {message.headers()}"
    return found


StartPipeline = Callable[..., RunningPipeline]
"""The ``start_pipeline`` fixture: ``(catalog_url=None, env=None) -> RunningPipeline``."""

DEAD_LETTER = str(Topic.DEAD_LETTER)
QUARANTINE = str(Topic.QUARANTINE)
