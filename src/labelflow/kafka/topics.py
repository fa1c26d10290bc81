"""The pipeline's topics, declared once, and an idempotent ``ensure``.

Every topic between stages is keyed by the annotation task id, so all events of one task stay
in order on one partition; the partition count is therefore fixed once a topic holds data
(adding partitions would move keys), and ``ensure`` reports a differing count instead of
changing it.

Names and shapes only: this module imports no Kafka client, so anything may import it;
creating and comparing topics on a cluster is :mod:`labelflow.kafka.ensure`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labelflow.config import Settings

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
