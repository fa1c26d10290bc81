"""The one way to build Kafka clients: settings' connection + security, plus the caller's.

librdkafka's own log lines go through Python logging (logger ``librdkafka``) instead of
stderr, so they share the structured format and level of everything else.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient

from labelflow.config import Settings

_RDKAFKA_LOG = logging.getLogger("librdkafka")


def _conf(settings: Settings, overrides: dict[str, Any] | None) -> dict[str, Any]:
    conf = settings.kafka_client_config()
    conf["logger"] = _RDKAFKA_LOG
    conf.update(overrides or {})
    return conf


def admin_client(settings: Settings, **overrides: Any) -> AdminClient:
    return AdminClient(_conf(settings, overrides))


def producer(settings: Settings, overrides: dict[str, Any] | None = None) -> Producer:
    """An idempotent producer; pass ``transactional.id`` in overrides for transactions."""
    base = {"enable.idempotence": True, "acks": "all", "linger.ms": 5}
    return Producer(_conf(settings, {**base, **(overrides or {})}))


def consumer(
    settings: Settings, group_id: str, overrides: dict[str, Any] | None = None
) -> Consumer:
    """A ``read_committed`` consumer that never auto-commits: offsets are committed by the
    transaction that produced the record's outputs, or explicitly by the caller."""
    base = {
        "group.id": group_id,
        "isolation.level": "read_committed",
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
    }
    return Consumer(_conf(settings, {**base, **(overrides or {})}))
