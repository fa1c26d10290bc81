"""Topics as code on a real cluster: create what is missing, report what differs.

Idempotent: ``ensure`` twice changes nothing, and a topic that exists with another shape is
reported, never altered (a partition count change would move keys between partitions).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from labelflow.kafka.topics import ResolvedTopic

log = logging.getLogger(__name__)


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
