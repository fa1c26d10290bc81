"""Transactions on the real local broker: what read_committed consumers may and may not see."""

from __future__ import annotations

import uuid

from labelflow.config import Settings
from labelflow.kafka.clients import consumer, producer
from support import consume


def test_read_committed_sees_committed_records_and_never_aborted_ones(
    kafka_settings: Settings, make_topic
) -> None:
    topic = make_topic(partitions=1)
    p = producer(kafka_settings, {"transactional.id": f"txn-{uuid.uuid4().hex}"})
    p.init_transactions(30)

    p.begin_transaction()
    for i in range(5):
        p.produce(topic, key=b"k", value=f"aborted-{i}".encode())
    p.flush(30)
    p.abort_transaction(30)

    p.begin_transaction()
    for i in range(10):
        p.produce(topic, key=b"k", value=f"committed-{i}".encode())
    p.commit_transaction(30)

    # A trailing aborted transaction too: the consumer must stop at the last stable offset.
    p.begin_transaction()
    p.produce(topic, key=b"k", value=b"aborted-tail")
    p.flush(30)
    p.abort_transaction(30)

    c = consumer(kafka_settings, f"g-{uuid.uuid4().hex}")
    try:
        c.subscribe([topic])
        values = [m.value() for m in consume(c, 10)]
        assert values == [f"committed-{i}".encode() for i in range(10)]
        # Nothing more arrives: neither aborted batch is ever delivered.
        assert c.poll(2.0) is None
    finally:
        c.close()

    uncommitted = consumer(
        kafka_settings, f"g-{uuid.uuid4().hex}", {"isolation.level": "read_uncommitted"}
    )
    try:
        # The aborted records are physically in the log: read_committed really filtered them.
        uncommitted.subscribe([topic])
        raw = [m.value() for m in consume(uncommitted, 16)]
        assert b"aborted-0" in raw
        assert b"aborted-tail" in raw
    finally:
        uncommitted.close()
