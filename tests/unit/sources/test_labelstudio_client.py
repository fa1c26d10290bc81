"""LabelStudioClient against a small Label Studio look-alike served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from copy import deepcopy
from typing import Any

import pytest

from labelflow.errors import PermanentError, TransientError
from labelflow.sources.labelstudio import LabelStudioOptions
from labelflow.sources.labelstudio_api import LabelStudioClient, id_after, updated_since
from labelflow.sources.labelstudio_sync import list_tasks
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


def test_reads_a_task_with_the_token(server: type[FakeLabelStudio]) -> None:
    with _client(server) as client:
        task = client.get_task(103)
        gone = client.get_task(999)
    assert task is not None and task["id"] == 103
    assert gone is None
    assert server.seen == ["/api/tasks/103", "/api/tasks/999"]


def test_pages_through_a_project_until_404(server: type[FakeLabelStudio]) -> None:
    server.tasks[900] = {**deepcopy(server.tasks[102]), "id": 900, "project": 8}
    with _client(server, page_size=2) as client:
        ids = [t["id"] for t in client.iter_tasks(7)]
    assert ids == [101, 102, 103, 104]
    pages = [p for p in server.seen if p.startswith("/api/tasks/?")]
    assert "page=3" in pages[2] and "fields=all" in pages[0] and "page_size=2" in pages[0]


def test_filters_and_orders_like_the_data_manager(server: type[FakeLabelStudio]) -> None:
    with _client(server) as client:
        after = [t["id"] for t in client.tasks_page(7, filters=[id_after(102)])]
        recent = client.tasks_page(
            7,
            filters=[updated_since("2025-03-02T00:00:00.000000Z")],
            ordering=["-tasks:updated_at"],
        )
    assert after == [103, 104]
    assert [t["id"] for t in recent] == [104, 103, 102]


def test_the_listing_names_every_task_with_its_revision_and_status(
    server: type[FakeLabelStudio],
) -> None:
    with _client(server, page_size=3) as client:
        listed = list(list_tasks(client, 7, LabelStudioOptions()))
    assert [(t.external_id, t.task_id, t.status) for t in listed] == [
        (101, "3f1c2b7e-5b8a-4c55-9a51-0d6f1c6a9e01", "submitted"),
        (102, "7:102", "skipped"),
        (103, "7:103", "submitted"),
        (104, "7:104", "deleted"),
    ]


def test_errors_are_classified(server: type[FakeLabelStudio]) -> None:
    with _client(server) as client:
        with pytest.raises(TransientError) as unavailable:
            client.get_task(FAILING)
        with pytest.raises(PermanentError) as bad:
            client.get_task(GONE_BAD)
    assert unavailable.value.code == "labelstudio.unavailable"
    assert bad.value.code == "labelstudio.http_error"
    with LabelStudioClient(server.base_url, "wrong") as client, pytest.raises(PermanentError) as e:
        client.get_task(101)
    assert e.value.code == "labelstudio.unauthorized"


def test_slow_server_times_out_as_transient(server: type[FakeLabelStudio]) -> None:
    with _client(server, timeout_s=0.2) as client, pytest.raises(TransientError) as err:
        client.get_task(HANGING)
    assert err.value.code == "labelstudio.timeout"


def test_unreachable_server_is_transient() -> None:
    client = LabelStudioClient("http://127.0.0.1:9", TOKEN, timeout_s=1)
    with client, pytest.raises(TransientError) as err:
        client.get_task(1)
    assert err.value.code == "labelstudio.unavailable"
