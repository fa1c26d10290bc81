"""The pipeline's topics, declared once, and an idempotent ``ensure``.

Every topic between stages is keyed by the annotation task id, so all events of one task stay
in order on one partition; the partition count is therefore fixed once a topic holds data
(adding partitions would move keys), and ``ensure`` reports a differing count instead of
changing it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

if TYPE_CHECKING:  # config imports the quality rules, which import the event envelope
    from labelflow.config import Settings

log = logging.getLogger(__name__)

DAY_MS = 24 * 60 * 60 * 1000


class Topic(StrEnum):
    """Logical topic names; the real name is ``settings.topic_prefix + value``."""

    SOURCE_CHANGES = "sources.changes"
    RAW = "annotations.raw"
    VALID = "annotations.valid"
    QUARANTINE = "annotations.quarantine"
    SAMPLES_READY = "samples.ready"
    DEAD_LETTER = "labelflow.deadletter"


@dataclass(frozen=True)
class TopicSpec:
    """One topic's desired shape. ``partitions=None`` means the configured default."""

    topic: Topic | str
    purpose: str
    retention_ms: int
    cleanup_policy: str = "delete"
    partitions: int | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.extra,
        }


PIPELINE_TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(
        Topic.SOURCE_CHANGES,
        "hints that source tasks changed (keyed by task, or by project for a sweep)",
        7 * DAY_MS,
    ),
    TopicSpec(Topic.RAW, "annotation events as received from every source", 14 * DAY_MS),
    TopicSpec(Topic.VALID, "annotation revisions that passed validation", 14 * DAY_MS),
    TopicSpec(
        Topic.QUARANTINE,
        "rejected annotation revisions with a reason code; kept long for review",
        90 * DAY_MS,
    ),
    TopicSpec(Topic.SAMPLES_READY, "materialized samples awaiting the catalog", 14 * DAY_MS),
    TopicSpec(
        Topic.DEAD_LETTER,
        "records a stage could not process, with the reason in headers; replayable",
        90 * DAY_MS,
    ),
)


@dataclass(frozen=True)
class ResolvedTopic:
    """A spec with the settings applied: the exact topic to create or compare with."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str]
    purpose: str


def resolve(specs: tuple[TopicSpec, ...], settings: Settings) -> list[ResolvedTopic]:
    return [
        ResolvedTopic(
            name=topic_name(spec.topic, settings),
            partitions=spec.partitions or settings.topic_partitions,
            replication_factor=settings.topic_replication_factor,
            config=spec.config(),
            purpose=spec.purpose,
        )
        for spec in specs
    ]


def topic_name(topic: Topic | str, settings: Settings) -> str:
    return settings.topic_prefix + str(topic)


RETRY_TOPIC_RETENTION_MS = 7 * DAY_MS
"""Longer than the longest retry delay by far: a retry record must outlive a stopped stage."""


def retry_topic(level: int) -> str:
    """The logical name of the topic holding records that wait for their ``level``-th retry.

    One topic per delay, shared by every stage (a header names the stage): records in one
    topic all wait the same time, so they are due in the order they were written and a worker
    only ever waits for the record at the head of a partition.
    """
    return f"labelflow.retry.{level}"


def declared_topics(settings: Settings) -> tuple[TopicSpec, ...]:
    """Every topic labelflow uses: the pipeline's, plus one retry topic per retry delay."""
    retries = tuple(
        TopicSpec(
            retry_topic(level),
            f"records waiting {delay:g} s for retry {level} after a transient failure",
            RETRY_TOPIC_RETENTION_MS,
        )
        for level, delay in enumerate(settings.retry_delays_s, start=1)
    )
    return PIPELINE_TOPICS + retries


@dataclass(frozen=True)
class Drift:
    topic: str
    setting: str
    expected: str
    actual: str


@dataclass
class EnsureReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drifts: list[Drift] = field(default_factory=list)


def diff_topic(
    want: ResolvedTopic, partitions: int, replication: int, config: dict[str, str]
) -> list[Drift]:
    """How an existing topic differs from what we declare (only settings we declare)."""
    drifts = []
    if partitions != want.partitions:
        drifts.append(Drift(want.name, "partitions", str(want.partitions), str(partitions)))
    if replication != want.replication_factor:
        drifts.append(
            Drift(want.name, "replication.factor", str(want.replication_factor), str(replication))
        )
    for key, value in want.config.items():
        actual = config.get(key)
        if actual != value:
            drifts.append(Drift(want.name, key, value, "(unset)" if actual is None else actual))
    return drifts


def _wait_for_metadata(admin: AdminClient, names: set[str], timeout_s: float) -> dict:
    """Topic metadata once every name in ``names`` is visible with a leader per partition.

    A broker's metadata cache trails the KRaft controller: a topic whose creation was just
    acknowledged may be absent, or lack leaders, for a moment; a client using it then fails
    with "not leader for partition".
    """
    deadline = time.monotonic() + timeout_s
    while True:
        topics = admin.list_topics(timeout=timeout_s).topics
        existing = {name: meta for name, meta in topics.items() if meta.error is None}
        ready = all(
            name in existing
            and existing[name].partitions
            and all(p.leader >= 0 for p in existing[name].partitions.values())
            for name in names
        )
        if ready or time.monotonic() > deadline:
            return existing
        time.sleep(0.1)


def ensure_topics(
    admin: AdminClient, wanted: list[ResolvedTopic], timeout_s: float = 30.0
) -> EnsureReport:
    """Create missing topics; report (never alter) existing ones that differ."""
    report = EnsureReport()
    metadata = admin.list_topics(timeout=timeout_s)
    existing = {name: meta for name, meta in metadata.topics.items() if meta.error is None}
    missing = [t for t in wanted if t.name not in existing]
    raced: set[str] = set()
    if missing:
        futures = admin.create_topics(
            [
                NewTopic(t.name, t.partitions, t.replication_factor, config=t.config)
                for t in missing
            ],
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
            except KafkaException as exc:
                # Another process ensured it first, or our metadata was stale: compare instead.
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise
                raced.add(name)
                continue
            log.info("topic created", extra={"topic": name})
            report.created.append(name)
    if raced or report.created:
        existing = _wait_for_metadata(admin, raced | set(report.created), timeout_s)
    present = [t for t in wanted if t.name in existing and t.name not in report.created]
    if present:
        resources = [ConfigResource(ResourceType.TOPIC, t.name) for t in present]
        configs = admin.describe_configs(resources, request_timeout=timeout_s)
        by_name = {res.name: fut.result(timeout=timeout_s) for res, fut in configs.items()}
        for t in present:
            meta = existing[t.name]
            replication = len(next(iter(meta.partitions.values())).replicas)
            actual = {k: v.value for k, v in by_name[t.name].items()}
            drifts = diff_topic(t, len(meta.partitions), replication, actual)
            report.drifts.extend(drifts)
            if not drifts:
                report.unchanged.append(t.name)
    return report
