"""Helpers shared by tests (importable because ``tests`` is on pytest's pythonpath)."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import pytest
from confluent_kafka import Consumer, Message

from labelflow.config import Settings
from labelflow.model import CheckResult, Feature, Lineage, SampleVersion


def missing_prerequisite(reason: str) -> NoReturn:
    """Skip a test whose service or shared data is absent — but fail it under CI (``CI=true``):
    a green CI run must mean the real services were exercised, not skipped."""
    if os.environ.get("CI", "").lower() in ("true", "1"):
        pytest.fail(f"prerequisite missing under CI: {reason}", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], bool], timeout_s: float = 30.0, what: str = "") -> None:
    """Poll ``predicate`` until true; fail the test naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    if not predicate():
        pytest.fail(f"timed out after {timeout_s} s waiting for {what or predicate}")


def consume(consumer: Consumer, count: int, timeout_s: float = 30.0) -> list[Message]:
    """Poll until ``count`` records arrived (or ``timeout_s`` passed); return them in order.

    Fewer than ``count`` comes back on timeout, so the caller's assertion says what is missing.
    """
    records: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.2)
        if msg is not None and msg.error() is None:
            records.append(msg)
    return records


def local_broker_settings(data_dir: Path) -> Settings:
    """Settings for a private local broker on free ports (jars from the shared user cache)."""
    return Settings(
        data_dir=data_dir,
        kafka_bootstrap=None,
        kafka_port=free_port(),
        kafka_controller_port=free_port(),
        topic_partitions=4,
    )


def make_version(sample_id: str, revision: int, *, image_hash: str = "a" * 64) -> SampleVersion:
    """A complete sample version whose hashes and counts follow from its revision."""
    return SampleVersion(
        sample_id=sample_id,
        revision=revision,
        image_hash=image_hash,
        mask_hash=f"{revision:064x}",
        width=256,
        height=128,
        crs="EPSG:3857",
        transform=(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0),
        bounds=(1000.0, 1936.0, 1128.0, 2000.0),
        class_pixels={"building": 10 * revision},
        features=[
            Feature(
                label="building",
                geometry={"type": "Polygon", "coordinates": [[[0, 0], [4, 0], [4, 4], [0, 0]]]},
                feature_id="f1",
            )
        ],
        checks=[CheckResult(code="sample.blank", passed=True, value=31.5, threshold=2.0)],
        lineage=Lineage(
            source="geojson",
            task_id=sample_id,
            revision=revision,
            event_id=f"event-{sample_id}-{revision}",
            image_uri="../shared/data/imagery/cogeo.tif",
            image_content_hash="b" * 64,
            code_version="0.1.0",
            config_hash="c0ffee",
            kafka_topic="annotations.valid",
            kafka_partition=3,
            kafka_offset=1000 + revision,
        ),
    )
