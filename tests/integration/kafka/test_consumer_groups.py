"""Consumer groups on the single-node broker: the partitions are shared, never duplicated."""

from __future__ import annotations

import uuid

from labelflow.config import Settings
from labelflow.kafka.clients import consumer
from support import wait_for


def test_two_consumers_in_one_group_split_four_partitions(
    kafka_settings: Settings, make_topic
) -> None:
    topic = make_topic(partitions=4)
    group = f"g-{uuid.uuid4().hex}"
    a = consumer(kafka_settings, group)
    b = consumer(kafka_settings, group)
    try:
        a.subscribe([topic])
        b.subscribe([topic])

        def balanced() -> bool:
            a.poll(0.1)
            b.poll(0.1)
            return len(a.assignment()) + len(b.assignment()) == 4 and bool(
                a.assignment() and b.assignment()
            )

        wait_for(balanced, timeout_s=60, what="both consumers to own partitions")
        mine = {tp.partition for tp in a.assignment()}
        theirs = {tp.partition for tp in b.assignment()}
        assert mine.isdisjoint(theirs)
        assert mine | theirs == {0, 1, 2, 3}
    finally:
        a.close()
        b.close()
