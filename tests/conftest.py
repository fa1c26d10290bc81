"""Session-wide fixtures: one real Kafka broker for the whole test session.

The broker is started through the same code as ``labelflow kafka up``, in a temporary data
directory on free ports, so a developer's own broker on 9092 is never touched. When
``LABELFLOW_KAFKA_BOOTSTRAP`` is set, that cluster is used instead and every topic name gets a
per-session prefix so runs never collide.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest
from confluent_kafka.admin import NewTopic

from labelflow.config import Settings
from labelflow.kafka.broker import LocalBroker
from labelflow.kafka.clients import admin_client
from support import local_broker_settings


@pytest.fixture(scope="session")
def kafka_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings pointing at a running, real Kafka broker."""
    external = os.environ.get("LABELFLOW_KAFKA_BOOTSTRAP")
    data_dir = tmp_path_factory.mktemp("labelflow")
    if external:
        yield Settings(data_dir=data_dir, topic_prefix=f"test-{uuid.uuid4().hex[:8]}.")
        return
    settings = local_broker_settings(data_dir)
    broker = LocalBroker(settings)
    broker.up()
    try:
        yield settings
    finally:
        broker.down()


@pytest.fixture
def make_topic(kafka_settings: Settings) -> Callable[..., str]:
    """Create a fresh, uniquely named topic and return its name."""

    def make(partitions: int = 1, prefix: str = "t") -> str:
        name = f"{kafka_settings.topic_prefix}{prefix}-{uuid.uuid4().hex[:10]}"
        admin = admin_client(kafka_settings)
        admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
        return name

    return make
