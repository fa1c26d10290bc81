"""``topics ensure`` against the real broker: idempotent creation, drift reported not fixed."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import NewTopic

from labelflow.config import Settings
from labelflow.kafka.clients import admin_client
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.topics import PIPELINE_TOPICS, Topic, resolve


def test_ensure_twice_creates_once_and_then_changes_nothing(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"topic_prefix": f"ens-{uuid.uuid4().hex[:6]}."})
    admin = admin_client(settings)
    wanted = resolve(PIPELINE_TOPICS, settings)

    first = ensure_topics(admin, wanted)
    assert sorted(first.created) == sorted(t.name for t in wanted)
    assert first.drifts == []

    second = ensure_topics(admin, wanted)
    assert second.created == []
    assert sorted(second.unchanged) == sorted(t.name for t in wanted)
    assert second.drifts == []

    described = admin.list_topics(timeout=30).topics
    assert all(len(described[t.name].partitions) == t.partitions for t in wanted)


def test_a_topic_created_by_hand_with_other_settings_is_reported(kafka_settings: Settings) -> None:
    settings = kafka_settings.model_copy(update={"topic_prefix": f"drf-{uuid.uuid4().hex[:6]}."})
    admin = admin_client(settings)
    wanted = resolve(PIPELINE_TOPICS, settings)
    raw = next(t for t in wanted if t.name.endswith(Topic.RAW.value))
    hand_made = NewTopic(
        raw.name, 1, 1, config={"retention.ms": "1000", "cleanup.policy": "delete"}
    )
    admin.create_topics([hand_made])[raw.name].result(30)

    report = ensure_topics(admin, wanted)

    assert raw.name not in report.created
    assert raw.name not in report.unchanged
    found = {(d.topic, d.setting): (d.expected, d.actual) for d in report.drifts}
    assert found[(raw.name, "partitions")] == (str(settings.topic_partitions), "1")
    assert found[(raw.name, "retention.ms")] == (raw.config["retention.ms"], "1000")
    # The drifted topic is left alone: still one partition.
    assert len(admin.list_topics(timeout=30).topics[raw.name].partitions) == 1
