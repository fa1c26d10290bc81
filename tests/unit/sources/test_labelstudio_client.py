"""LabelStudioClient against a small Label Studio look-alike served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from datetime import UTC, datetime
from typing import Any

import pytest

from labelflow.errors import LabelflowError
from labelflow.model import Status
from labelflow.sources.base import revision_of
from labelflow.sources.labelstudio import LabelStudioClient
from labelflow.stage import PermanentError, TransientError
from labelstudio_support import (
    FAILING,
    GONE_BAD,
    HANGING,
    TOKEN,
    FakeLabelStudio,
    fake_labelstudio,
)


@pytest.fixture
def server() -> Iterator[type[FakeLabelStudio]]:
    with fake_labelstudio() as handler:
        yield handler


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
