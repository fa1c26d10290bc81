"""LabelStudioClient against a small Label Studio look-alike served over real HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from copy import deepcopy
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest

from labelflow.errors import LabelflowError
from labelflow.model import Status
from labelflow.sources.base import revision_of
from labelflow.sources.labelstudio import LabelStudioClient
from labelflow.stage import PermanentError, TransientError

TOKEN = "secret-token"
EXPORT = json.loads(
    (Path(__file__).parents[2] / "fixtures" / "labelstudio" / "export.json").read_text()
)
FAILING, HANGING, GONE_BAD = 500, 501, 400


class FakeLabelStudio(BaseHTTPRequestHandler):
    """Answers like Label Studio 1.x: ``/api/tasks/{id}`` and the paginated task list, with
    404 past the last page and for deleted tasks."""

    tasks: dict[int, dict[str, Any]]
    release: threading.Event
    seen: list[str]

    def do_GET(self) -> None:
        self.seen.append(self.path)
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            return self._reply(401, {"detail": "Authentication credentials were not provided."})
        url = urlparse(self.path)
        if url.path == "/api/tasks/":
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            page, size = int(query["page"]), int(query["page_size"])
            tasks = [t for t in self.tasks.values() if t["project"] == int(query["project"])]
            chunk = tasks[(page - 1) * size : page * size]
            if page > 1 and not chunk:
                return self._reply(404, {"detail": "Invalid page."})
            return self._reply(200, {"tasks": chunk, "total": len(tasks)})
        task_id = int(url.path.rstrip("/").rsplit("/", 1)[1])
        if task_id == FAILING:
            return self._reply(503, {"detail": "maintenance"})
        if task_id == GONE_BAD:
            return self._reply(400, {"detail": "bad request"})
        if task_id == HANGING:
            self.release.wait(10)
            return self._reply(200, {})
        if task_id not in self.tasks:
            return self._reply(404, {"detail": "Not found."})
        return self._reply(200, self.tasks[task_id])

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output clean."""


@pytest.fixture
def server() -> Iterator[type[FakeLabelStudio]]:
    handler = type(
        "Handler",
        (FakeLabelStudio,),
        {"tasks": {t["id"]: deepcopy(t) for t in EXPORT}, "release": threading.Event(), "seen": []},
    )
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)  # listening once constructed
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    handler.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield handler
    finally:
        handler.release.set()
        httpd.shutdown()
        httpd.server_close()


def _client(server: type[FakeLabelStudio], **kwargs: Any) -> LabelStudioClient:
    return LabelStudioClient(server.base_url, TOKEN, **kwargs)


def test_fetches_a_task_current_state_with_the_token(server: type[FakeLabelStudio]) -> None:
    with _client(server) as client:
        event = client.current_event(7, 103)
    assert (event.task_id, event.status) == ("7:103", Status.SUBMITTED)
    assert [f.label for f in event.features] == ["water"]
    assert server.seen == ["/api/tasks/103"]


def test_pages_through_a_project_until_404(server: type[FakeLabelStudio]) -> None:
    server.tasks[900] = {**deepcopy(server.tasks[102]), "id": 900, "project": 8}
    with _client(server, page_size=2) as client:
        ids = [t["id"] for t in client.iter_tasks(7)]
        events = list(client.project_events(7))
    assert ids == [101, 102, 103, 104]
    assert [e.task_id for e in events][1:] == ["7:102", "7:103", "7:104"]
    pages = [p for p in server.seen if p.startswith("/api/tasks/?")]
    assert "page=3" in pages[2] and "fields=all" in pages[0] and "page_size=2" in pages[0]


def test_task_without_annotations_or_gone_is_a_deletion(server: type[FakeLabelStudio]) -> None:
    now = datetime(2025, 5, 1, tzinfo=UTC)
    with _client(server) as client:
        emptied = client.current_event(7, 104, now=now)
        del server.tasks[102]
        vanished = client.current_event(7, 102, now=now)
    assert emptied.status == Status.DELETED
    assert emptied.revision == revision_of(datetime(2025, 3, 4, 7, 30, tzinfo=UTC))
    assert (vanished.task_id, vanished.status, vanished.revision) == (
        "7:102",
        Status.DELETED,
        revision_of(now),
    )


def test_errors_are_classified(server: type[FakeLabelStudio]) -> None:
    with _client(server) as client:
        with pytest.raises(TransientError) as unavailable:
            client.get_task(FAILING)
        with pytest.raises(PermanentError):
            client.get_task(GONE_BAD)
    assert unavailable.value.code == "labelstudio.unavailable"
    with LabelStudioClient(server.base_url, "wrong") as client, pytest.raises(LabelflowError):
        client.get_task(101)


def test_slow_server_times_out_as_transient(server: type[FakeLabelStudio]) -> None:
    with _client(server, timeout_s=0.2) as client, pytest.raises(TransientError) as err:
        client.get_task(HANGING)
    assert err.value.code == "labelstudio.timeout"


def test_unreachable_server_is_transient() -> None:
    client = LabelStudioClient("http://127.0.0.1:9", TOKEN, timeout_s=1)
    with client, pytest.raises(TransientError) as err:
        client.get_task(1)
    assert err.value.code == "labelstudio.unavailable"
