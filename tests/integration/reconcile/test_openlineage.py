"""OpenLineage events of reconcile runs go to Kafka first and reach their transport in order,
once each: to a file, and over HTTP to a receiver that is down at first and loses nothing."""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from openlineage.client.transport.transport import Transport

from labelflow.config import Settings
from labelflow.openlineage import file_transport, forward, http_transport, reconcile_lineage
from labelflow.reconcile.runs import RunReport
from support import free_port

pytestmark = pytest.mark.integration


def report(outcome: str = "ok", missing: int = 2) -> RunReport:
    return RunReport(
        run_id=uuid.uuid4().hex,
        source="synthetic",
        dry_run=False,
        outcome=outcome,
        started_at=datetime.now(UTC),
        duration_s=0.5,
        listed=10,
        catalogued=9,
        repairs=missing,
        counts={"missing": missing, "stale": 0},
        examples={},
        error=None if outcome == "ok" else "RuntimeError: the source did not answer",
    )


class Down(Transport):
    kind = "down"

    def emit(self, event: Any) -> Any:
        raise ConnectionError("the lineage endpoint is down")


@pytest.fixture
def settings(kafka_settings: Settings, tmp_path: Path) -> Settings:
    return kafka_settings.model_copy(
        update={"topic_prefix": f"{kafka_settings.topic_prefix}ol-{uuid.uuid4().hex[:8]}.",
                "data_dir": tmp_path}
    )  # fmt: skip


class Receiver(BaseHTTPRequestHandler):
    received: list[dict[str, Any]]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append(json.loads(body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


@pytest.fixture
def receiver_port() -> int:
    return free_port()


@pytest.fixture
def receiver(receiver_port: int) -> Iterator[type[Receiver]]:
    handler = type("Handler", (Receiver,), {"received": []})
    server = ThreadingHTTPServer(("127.0.0.1", receiver_port), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield handler
    server.shutdown()
    server.server_close()


def check(event: dict[str, Any]) -> None:
    """The fields the OpenLineage spec requires, with their formats."""
    assert event["eventType"] in ("START", "COMPLETE", "FAIL")
    datetime.fromisoformat(event["eventTime"])
    uuid.UUID(event["run"]["runId"])
    assert event["job"]["namespace"] == "labelflow" and event["job"]["name"]
    assert event["producer"].startswith("https://")
    facets = [
        *event["job"].get("facets", {}).values(),
        *event["run"].get("facets", {}).values(),
        *(f for d in event.get("outputs", []) for f in d.get("facets", {}).values()),
    ]
    for facet in facets:
        assert facet["_producer"] and facet["_schemaURL"].startswith("https://openlineage.io/")


def test_events_reach_a_file_in_order_once_each_even_after_a_failure(
    settings: Settings, tmp_path: Path
) -> None:
    run = report()
    reconcile_lineage(settings)(run)

    with pytest.raises(ConnectionError):
        forward(settings, Down(), retries=1, backoff_s=0.01)
    path = tmp_path / "events.jsonl"
    assert forward(settings, file_transport(path)) == 2
    assert forward(settings, file_transport(path)) == 0  # nothing twice

    events = [json.loads(line) for line in path.read_text().splitlines()]
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    for event in events:
        check(event)
    assert {e["run"]["runId"].replace("-", "") for e in events} == {run.run_id}
    assertions = {
        a["assertion"]: a["success"]
        for a in events[1]["outputs"][0]["facets"]["dataQualityAssertions"]["assertions"]
    }
    assert assertions["no_missing"] is False and assertions["no_stale"] is True


def test_an_endpoint_that_was_down_gets_every_event_once_it_is_back(
    settings: Settings, receiver_port: int, request: pytest.FixtureRequest
) -> None:
    failed = report(outcome="failed")
    reconcile_lineage(settings)(failed)
    url = f"http://127.0.0.1:{receiver_port}"
    with pytest.raises(Exception):  # noqa: B017 - whatever the HTTP client raises
        forward(settings, http_transport(url), retries=0)

    receiver = request.getfixturevalue("receiver")
    assert forward(settings, http_transport(url)) == 2
    assert [e["eventType"] for e in receiver.received] == ["START", "FAIL"]
    for event in receiver.received:
        check(event)
    error = receiver.received[1]["run"]["facets"]["errorMessage"]
    assert "did not answer" in error["message"]
