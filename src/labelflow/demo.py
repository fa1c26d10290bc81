"""The demo: the whole pipeline on one machine, fed by the synthetic source, with live progress.

It runs exactly what production runs — a Kafka broker, the topics, one worker process per
stage under the supervisor, SQLite and the blob store under the data directory — and only the
source is synthetic. Because the synthetic history knows its own expected final state, the
summary can say whether the catalog ended up exactly right, not just how busy it was.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from rich.console import Console
from rich.live import Live
from rich.table import Table

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.errors import ClassifiedError
from labelflow.events import decode
from labelflow.kafka import retry
from labelflow.kafka.clients import admin_client, consumer
from labelflow.kafka.topics import Topic, topic_name
from labelflow.model import Quarantined
from labelflow.quality.annotations import parse_raw
from labelflow.service import LocalPipeline
from labelflow.shutdown import ForcedStop, stop_on_signals
from labelflow.sources.publish import RawPublisher
from labelflow.sources.synthetic import SyntheticConfig, SyntheticHistory, generate
from labelflow.stages import PIPELINE_STAGES
from labelflow.supervisor import Supervisor

DELIVERIES_PER_TASK = 3.0
"""About how many deliveries the synthetic source makes per task (revisions, duplicates, bad
inputs): sizes the history so its schedule fits the requested duration."""

DRAIN_TIMEOUT_S = 90.0
"""After the last delivery, how long the demo waits for the catalog to reach the expected
state before it reports what it has."""


@dataclass
class DemoOptions:
    duration_s: float = 60.0
    rate_per_s: float = 20.0
    seed: int | None = None
    bad_fraction: float = 0.05
    workers_per_stage: int = 1


@dataclass
class TopicTally:
    """Counts records arriving on a topic from now on, by a key taken from each record."""

    settings: Settings
    topic: Topic
    key_of: Callable[[bytes | None, dict[str, bytes]], str | None]
    counts: Counter[str] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        name = topic_name(self.topic, self.settings)
        reader = consumer(self.settings, f"labelflow.demo-tally.{uuid.uuid4().hex}")
        partitions = admin_client(self.settings).list_topics(name, timeout=30).topics[name]
        reader.assign(
            [TopicPartition(name, p, _end_offset(reader, name, p)) for p in partitions.partitions]
        )

        def run() -> None:
            try:
                while not self._stop.is_set():
                    for msg in reader.consume(num_messages=500, timeout=0.2):
                        if msg.error() is None:
                            headers = {k: v or b"" for k, v in msg.headers() or ()}
                            key = self.key_of(msg.value(), headers)
                            if key is not None:
                                self.counts[key] += 1
            finally:
                reader.close()

        self._thread = threading.Thread(target=run, name=f"tally-{self.topic}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


_NOT_READY = {
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.UNKNOWN_TOPIC_OR_PART,
    KafkaError._TIMED_OUT,
}


def _end_offset(reader: Consumer, topic: str, partition: int, timeout_s: float = 30.0) -> int:
    """The partition's high watermark, waiting out a just-created topic whose leader the
    broker does not serve yet ("not leader for partition", which librdkafka does not flag
    as retriable)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return reader.get_watermark_offsets(TopicPartition(topic, partition), timeout=5)[1]
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _quarantine_reason(value: bytes | None, _headers: dict[str, bytes]) -> str | None:
    """The first reason of a quarantine record; None for a re-run marker (no value)."""
    if not value:
        return None
    try:
        held = decode(value)
    except ClassifiedError as exc:
        return exc.code
    return held.reasons[0].code if isinstance(held, Quarantined) else "unknown"


def _dead_letter_code(_value: bytes | None, headers: dict[str, bytes]) -> str:
    return headers.get(retry.ERROR_CODE, b"unknown").decode()


@dataclass
class Progress:
    published: int = 0
    scheduled: int = 0
    live: int = 0
    deleted: int = 0
    expected_live: int = 0
    expected_deleted: int = 0
    settled: int = 0
    tasks: int = 0

    @property
    def converged(self) -> bool:
        """Every task is in its expected final state (counts alone could match while a
        task's last revision is still in flight)."""
        return self.settled == self.tasks


@dataclass
class Dashboard:
    """What the person watching sees, refreshed at most twice a second; each refresh also
    lets the supervisor restart any worker that died."""

    progress: Progress
    catalog: Catalog
    history: SyntheticHistory
    quarantine: TopicTally
    dead: TopicTally
    supervisor: Supervisor
    live: Live | None = None
    _last: float = 0.0

    def refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.5:
            return
        self._last = now
        self.supervisor.check()
        p = self.progress
        p.live, p.deleted, p.settled = _tally(self.catalog, self.history)
        if self.live is not None:
            self.live.update(self.view())

    def view(self) -> Table:
        p, supervisor = self.progress, self.supervisor
        table = Table(title="labelflow demo", show_header=False, min_width=60)
        table.add_row("events published", f"{p.published} / {p.scheduled}")
        table.add_row("samples stored", f"{p.live} (expected {p.expected_live})")
        table.add_row("samples deleted", f"{p.deleted} (expected {p.expected_deleted})")
        table.add_row("tasks in their final state", f"{p.settled} / {p.tasks}")
        top = ", ".join(f"{k} {v}" for k, v in self.quarantine.counts.most_common(4))
        table.add_row("quarantined", f"{self.quarantine.total}" + (f"  ({top})" if top else ""))
        table.add_row("dead-lettered", str(self.dead.total))
        restarts = sum(w.restarts for w in supervisor.workers)
        alive = f"{supervisor.alive()} / {len(supervisor.workers)}"
        table.add_row("workers alive", alive + (f", {restarts} restarted" if restarts else ""))
        return table


def run_demo(settings: Settings, options: DemoOptions, console: Console) -> dict:
    """Run the demo until its history is delivered and drained, or stopped; return the summary.

    The first Ctrl-C, SIGTERM or SIGHUP (a closed terminal) stops it in order; a second stops
    it at once. Either way the workers and the broker it started are stopped: a demo must
    never leave processes behind that the next one would share consumer groups with.
    """
    stop = threading.Event()
    pipeline = LocalPipeline(settings, dict.fromkeys(PIPELINE_STAGES, options.workers_per_stage))
    forced = False
    with stop_on_signals(stop.set):
        pipeline.start(console)  # on a failure it stops what it started
        try:
            return _run(settings, options, console, pipeline, stop)
        except ForcedStop:
            forced = True
            raise
        finally:
            pipeline.close(console, force=forced)


def _run(
    settings: Settings,
    options: DemoOptions,
    console: Console,
    pipeline: LocalPipeline,
    stop: threading.Event,
) -> dict:
    started = time.monotonic()
    catalog, supervisor = pipeline.catalog, pipeline.supervisor

    def wait(seconds: float) -> None:
        if stop.wait(seconds):
            raise KeyboardInterrupt

    seed = options.seed if options.seed is not None else int(time.time())
    tasks = max(10, int(options.rate_per_s * options.duration_s / DELIVERIES_PER_TASK))
    history = generate(
        SyntheticConfig(
            seed=seed,
            tasks=tasks,
            rate_per_s=options.rate_per_s,
            bad_fraction=options.bad_fraction,
        )
    )
    console.print(
        f"Synthetic source: seed {seed}, {tasks} tasks, {len(history.deliveries)} deliveries "
        f"at {options.rate_per_s:g}/s. Worker logs: {settings.data_dir / 'logs'}"
    )
    quarantine = TopicTally(settings, Topic.QUARANTINE, _quarantine_reason)
    dead = TopicTally(settings, Topic.DEAD_LETTER, _dead_letter_code)
    quarantine.start()
    dead.start()
    publisher = RawPublisher(settings)
    progress = Progress(
        scheduled=len(history.deliveries),
        tasks=len(history.expected),
        expected_live=sum(t.sample for t in history.expected.values()),
        expected_deleted=sum(
            1 for t in history.expected.values() if t.revision is not None and not t.sample
        ),
    )
    dashboard = Dashboard(progress, catalog, history, quarantine, dead, supervisor)
    sent_at: dict[tuple[str, int], float] = {}
    interrupted = False
    pipeline_start = time.monotonic()
    try:
        with Live(dashboard.view(), console=console) as live:
            dashboard.live = live
            for delivery in history.deliveries:
                while time.monotonic() - pipeline_start < delivery.at_s:
                    dashboard.refresh()
                    wait(0.05)
                publisher.publish_raw(delivery.task_id, delivery.value)
                sent_at.setdefault((delivery.task_id, _revision_of(delivery.value)), time.time())
                progress.published += 1
            publisher.flush()
            deadline = time.monotonic() + DRAIN_TIMEOUT_S
            while time.monotonic() < deadline and not progress.converged:
                dashboard.refresh()
                wait(0.25)
            dashboard.refresh(force=True)
    except ForcedStop:
        raise
    except KeyboardInterrupt:
        interrupted = True
        console.print("[yellow]Interrupted: stopping the workers…[/]")
    finally:
        exit_codes = pipeline.stop_workers()
        quarantine.stop()
        dead.stop()
    elapsed = time.monotonic() - pipeline_start
    latencies = _latencies(catalog, history, sent_at)
    summary = {
        "seed": seed,
        "events_in": progress.published,
        "samples_stored": progress.live,
        "samples_deleted": progress.deleted,
        "quarantined": quarantine.total,
        "quarantined_by_reason": dict(quarantine.counts.most_common()),
        "dead_lettered": dead.total,
        "dead_lettered_by_reason": dict(dead.counts.most_common()),
        "matches_expected_state": not interrupted and progress.converged,
        "latency_p50_s": _percentile(latencies, 50),
        "latency_p99_s": _percentile(latencies, 99),
        "duration_s": round(elapsed, 1),
        "throughput_events_per_s": round(progress.published / elapsed, 1) if elapsed else 0.0,
        "samples_per_s": round(progress.live / elapsed, 1) if elapsed else 0.0,
        "worker_restarts": sum(w.restarts for w in supervisor.workers),
        "worker_exit_codes": exit_codes,
        "interrupted": interrupted,
        "total_s": round(time.monotonic() - started, 1),
    }
    return summary


def _revision_of(value: bytes) -> int:
    """The revision of a delivered event, or -1 for a delivery that is not one."""
    parsed = parse_raw(value)
    return -1 if isinstance(parsed, list) else parsed.revision


def _tally(catalog: Catalog, history: SyntheticHistory) -> tuple[int, int, int]:
    """Of the history's tasks: how many are live, how many deleted, and how many are exactly
    in the expected final state (live at the expected revision, or not live)."""
    live = deleted = settled = 0
    states = {s.sample_id: s for s in catalog.states(list(history.expected))}
    for task_id, want in history.expected.items():
        got = states.get(task_id)
        is_live = got is not None and not got.deleted
        live += is_live
        deleted += got is not None and got.deleted
        settled += want.sample == is_live and (not is_live or got.revision == want.revision)
    return live, deleted, settled


def _latencies(
    catalog: Catalog, history: SyntheticHistory, sent_at: dict[tuple[str, int], float]
) -> list[float]:
    """Seconds from publishing a task's final revision to the catalog holding it."""
    out = []
    for state in catalog.states(list(history.expected)):
        sent = sent_at.get((state.sample_id, state.revision))
        if sent is not None:
            out.append(max(0.0, state.updated_at.timestamp() - sent))
    return out


def _percentile(values: list[float], pct: int) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 3)
    return round(statistics.quantiles(values, n=100, method="inclusive")[pct - 1], 3)


def write_summary_table(summary: dict, console: Console) -> None:
    table = Table(title="Summary", show_header=False)
    for key in (
        "events_in", "samples_stored", "samples_deleted", "quarantined", "dead_lettered",
        "matches_expected_state", "latency_p50_s", "latency_p99_s", "samples_per_s",
        "throughput_events_per_s", "worker_restarts", "duration_s",
    ):  # fmt: skip
        table.add_row(key.replace("_", " "), str(summary[key]))
    for reason, count in summary["quarantined_by_reason"].items():
        table.add_row(f"  quarantined: {reason}", str(count))
    for reason, count in summary["dead_lettered_by_reason"].items():
        table.add_row(f"  dead-lettered: {reason}", str(count))
    console.print(table)
