"""Label Studio end to end through real parts: a webhook posted to the API app becomes a hint
on the real broker, a ``labelflow run labelstudio`` worker reads the task from a Label Studio
look-alike over HTTP, and the canonical event lands on ``annotations.raw``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import Message, TopicPartition
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labelflow.api.app import create_app
from labelflow.api.webhooks import DEFAULT_SECRET_HEADER
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.events import decode
from labelflow.kafka.clients import admin_client, consumer
from labelflow.kafka.ensure import ensure_topics
from labelflow.kafka.topics import Topic, declared_topics, resolve, topic_name
from labelflow.model import AnnotationEvent, Status
from labelflow.sources.publish import HintPublisher
from labelstudio_support import TOKEN, FakeLabelStudio, fake_labelstudio
from runtime_support import Collector
from support import free_port, wait_for

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).parents[2] / "fixtures" / "labelstudio"
SECRET = "webhook-secret"


@dataclass
class Flow:
    settings: Settings
    api: TestClient
    labelstudio: type[FakeLabelStudio]
    raw: Collector

    def post(self, fixture: str, secret: str | None = SECRET) -> int:
        headers = {DEFAULT_SECRET_HEADER: secret} if secret is not None else {}
        body = (FIXTURES / fixture).read_bytes()
        return self.api.post("/webhooks/labelstudio", content=body, headers=headers).status_code

    def post_body(self, body: dict[str, object]) -> int:
        headers = {DEFAULT_SECRET_HEADER: SECRET}
        return self.api.post("/webhooks/labelstudio", json=body, headers=headers).status_code

    def raw_event(self, task_id: str, timeout_s: float = 60.0) -> AnnotationEvent:
        """The one event for ``task_id`` on annotations.raw, read_committed."""
        [event] = self.raw_events(task_id, 1, timeout_s)
        return event

    def raw_events(
        self, task_id: str, count: int, timeout_s: float = 60.0
    ) -> list[AnnotationEvent]:
        """The first ``count`` events for ``task_id`` on annotations.raw, in order."""

        def mine() -> list[Message]:
            return [m for m in self.raw.records if m.key() == task_id.encode()]

        def arrived() -> bool:
            self.raw.poll()
            return len(mine()) >= count

        wait_for(arrived, timeout_s, f"{count} events of {task_id} on annotations.raw")
        events = [decode(record.value()) for record in mine()]
        assert all(isinstance(e, AnnotationEvent) for e in events)
        return events  # type: ignore[return-value]

    def fetches(self, task_id: int) -> int:
        return self.labelstudio.seen.count(f"/api/tasks/{task_id}")


@pytest.fixture(scope="module")
def flow(kafka_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flow]:
    workdir = tmp_path_factory.mktemp("labelstudio-flow")
    prefix = f"{kafka_settings.topic_prefix}ls-{uuid.uuid4().hex[:8]}."
    retry_delays_s = [0.2, 0.5, 1.0]
    settings = kafka_settings.model_copy(
        update={
            "topic_prefix": prefix,
            "retry_delays_s": retry_delays_s,
            "labelstudio_webhook_secret": SecretStr(SECRET),
        }
    )
    ensure_topics(admin_client(settings), resolve(declared_topics(settings), settings))
    with fake_labelstudio() as labelstudio, Catalog(f"sqlite:///{workdir / 'c.db'}") as catalog:
        env = {
            **os.environ,
            "LABELFLOW_KAFKA_BOOTSTRAP": settings.bootstrap_servers,
            "LABELFLOW_TOPIC_PREFIX": prefix,
            "LABELFLOW_RETRY_DELAYS_S": json.dumps(retry_delays_s),
            "LABELFLOW_BATCH_MAX_MS": "100",
            "LABELFLOW_LABELSTUDIO_URL": labelstudio.base_url,
            "LABELFLOW_LABELSTUDIO_TOKEN": TOKEN,
            "LABELFLOW_DATA_DIR": str(workdir),
            "LABELFLOW_CONFIG_FILE": str(workdir / "no-config.toml"),
            "LABELFLOW_LOG_FORMAT": "json",
        }
        log = workdir / "labelstudio-worker.log"
        with log.open("wb") as out:
            worker = subprocess.Popen(
                [sys.executable, "-m", "labelflow", "--log-level", "INFO", "run", "labelstudio"],
                env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        raw = Collector(settings, topic_name(Topic.RAW, settings))
        try:
            yield Flow(settings, TestClient(create_app(settings, catalog)), labelstudio, raw)
        finally:
            worker.send_signal(signal.SIGTERM)
            code = worker.wait(timeout=30)
            raw.consumer.close()
        assert code == 0, log.read_text()[-3000:]


def test_webhook_hint_ends_as_the_canonical_event_on_raw(flow: Flow) -> None:
    assert flow.post("webhook_annotation_created.json") == 202
    event = flow.raw_event("3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01")  # task 101's own id
    assert (event.source, event.status) == ("labelstudio", Status.SUBMITTED)
    assert {f.label for f in event.features} == {"building", "tree"}
    assert flow.fetches(101) >= 1


def test_label_studio_5xx_is_retried_until_the_task_is_read(flow: Flow) -> None:
    skipped = {"action": "ANNOTATION_CREATED", "project": {"id": 7}, "task": {"id": 102}}
    assert flow.post_body(skipped) == 202
    assert flow.raw_event("7:102").status == Status.SKIPPED
    del flow.labelstudio.tasks[102]  # deleted in Label Studio: answers 404
    flow.labelstudio.outages[102] = 2  # two 503s, then served (as a 404)
    assert flow.post("webhook_tasks_deleted.json") == 202  # tasks 102 and 104
    assert [e.status for e in flow.raw_events("7:102", 2)] == [Status.SKIPPED, Status.DELETED]
    assert flow.fetches(102) >= 4  # read once, then 404 only after its two 503s
    # 104 was never labelled, so labelflow never emitted it: its deletion changes nothing.
    wait_for(lambda: flow.fetches(104) >= 1, 30, "task 104 to be read")
    flow.raw.poll()
    assert not [m for m in flow.raw.records if m.key() == b"7:104"]


def test_webhook_without_the_secret_is_refused_and_publishes_nothing(flow: Flow) -> None:
    changes = topic_name(Topic.SOURCE_CHANGES, flow.settings)
    before = _end_offsets(flow.settings, changes)
    assert flow.post("webhook_annotation_updated.json", secret=None) == 401
    assert flow.post("webhook_annotation_updated.json", secret="wrong") == 401
    # An accepted hint is acknowledged before the answer, so one would already be counted.
    assert _end_offsets(flow.settings, changes) == before


def test_hint_the_broker_does_not_take_is_503(kafka_settings: Settings, tmp_path: Path) -> None:
    nowhere = kafka_settings.model_copy(
        update={
            "kafka_bootstrap": f"127.0.0.1:{free_port()}",
            "labelstudio_webhook_secret": SecretStr(SECRET),
        }
    )
    publisher = HintPublisher(nowhere, timeout_s=1.0)
    with Catalog(f"sqlite:///{tmp_path / 'c.db'}") as catalog:
        api = TestClient(create_app(nowhere, catalog, publisher.publish))
        body = (FIXTURES / "webhook_annotation_created.json").read_bytes()
        response = api.post(
            "/webhooks/labelstudio", content=body, headers={DEFAULT_SECRET_HEADER: SECRET}
        )
        metrics = api.get("/metrics").text
    assert response.status_code == 503
    assert "not delivered" in response.json()["detail"]
    assert 'labelflow_source_hints_total{outcome="failed",source="labelstudio"}' in metrics


def _end_offsets(settings: Settings, topic: str) -> list[int]:
    reader = consumer(settings, f"offsets-{uuid.uuid4().hex}")
    try:
        partitions = admin_client(settings).list_topics(topic, timeout=10).topics[topic].partitions
        return [
            reader.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in sorted(partitions)
        ]
    finally:
        reader.close()
