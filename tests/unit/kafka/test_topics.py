"""The pure parts of topics as code: resolution with settings and drift detection."""

from __future__ import annotations

from labelflow.config import Settings
from labelflow.kafka.ensure import diff_topic
from labelflow.kafka.topics import PIPELINE_TOPICS, Topic, resolve


def test_every_declared_topic_is_unique_and_prefixed() -> None:
    settings = Settings(topic_prefix="team-a.", topic_partitions=8)
    resolved = resolve(PIPELINE_TOPICS, settings)
    names = [t.name for t in resolved]
    assert len(names) == len(set(names))
    assert all(n.startswith("team-a.") for n in names)
    assert all(t.partitions == 8 for t in resolved)


def test_dead_letters_are_kept_longer_than_pipeline_records() -> None:
    by_name = {t.name: t for t in resolve(PIPELINE_TOPICS, Settings())}
    dead = int(by_name[Topic.DEAD_LETTER].config["retention.ms"])
    assert all(dead >= int(t.config["retention.ms"]) for t in by_name.values())


def test_diff_reports_only_declared_settings_that_differ() -> None:
    want = resolve(PIPELINE_TOPICS, Settings(topic_partitions=6))[0]
    same = dict(want.config, **{"segment.bytes": "123"})  # undeclared setting: ignored
    assert diff_topic(want, 6, 1, same) == []

    drifted = dict(want.config, **{"retention.ms": "5"})
    drifts = diff_topic(want, 3, 2, drifted)
    assert {(d.setting, d.expected, d.actual) for d in drifts} == {
        ("partitions", "6", "3"),
        ("replication.factor", "1", "2"),
        ("retention.ms", want.config["retention.ms"], "5"),
    }


def test_diff_names_a_missing_setting() -> None:
    want = resolve(PIPELINE_TOPICS, Settings())[0]
    config = {k: v for k, v in want.config.items() if k != "cleanup.policy"}
    (drift,) = diff_topic(want, want.partitions, 1, config)
    assert (drift.setting, drift.actual) == ("cleanup.policy", "(unset)")
