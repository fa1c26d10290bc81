"""The local broker is durable: ``down`` then ``up`` keeps topics, records and group offsets."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import NewTopic

from labelflow.kafka.broker import LocalBroker
from labelflow.kafka.clients import admin_client, consumer, producer
from support import consume, local_broker_settings

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("LABELFLOW_KAFKA_BOOTSTRAP")),
    reason="restarts a private local broker; not applicable to an external cluster",
)


def test_down_then_up_keeps_records_and_committed_offsets(tmp_path: Path) -> None:
    settings = local_broker_settings(tmp_path)
    broker = LocalBroker(settings)
    topic, group = f"durable-{uuid.uuid4().hex[:8]}", f"g-{uuid.uuid4().hex[:8]}"
    broker.up()
    try:
        admin = admin_client(settings)  # kept referenced: the future dies with its client
        admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
        p = producer(settings)
        for i in range(100):
            p.produce(topic, key=str(i).encode(), value=f"v{i}".encode())
        assert p.flush(30) == 0

        c = consumer(settings, group)
        c.assign([TopicPartition(topic, 0, 0)])
        assert len(consume(c, 40)) == 40
        c.commit(offsets=[TopicPartition(topic, 0, 40)], asynchronous=False)
        c.close()

        assert broker.down() == "stopped"
        assert broker.pid() is None
        status, started = broker.up()
        assert started and status.reachable

        fresh = consumer(settings, group)
        committed = fresh.committed([TopicPartition(topic, 0)], timeout=30)
        assert committed[0].offset == 40
        fresh.close()

        reader = consumer(settings, f"g-{uuid.uuid4().hex[:8]}")
        reader.subscribe([topic])
        values = [m.value() for m in consume(reader, 100, timeout_s=60)]
        reader.close()
        assert values == [f"v{i}".encode() for i in range(100)]
    finally:
        broker.down()
