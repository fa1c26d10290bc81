"""The Label Studio webhook endpoint, driven with Label Studio's own payload shapes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from labelflow.api.webhooks import webhook_router
from labelflow.sources.labelstudio import TaskChanged

FIXTURES = Path(__file__).parents[2] / "fixtures" / "labelstudio"
SECRET = "s3cret-value"
HEADER = "X-LS-Secret"


@pytest.fixture
def published() -> list[TaskChanged]:
    return []


@pytest.fixture
def client(published: list[TaskChanged]) -> TestClient:
    app = FastAPI()
    app.include_router(webhook_router(SECRET, published.append, header_name=HEADER))
    return TestClient(app)


def _post(client: TestClient, fixture: str, secret: str | None = SECRET) -> object:
    headers = {HEADER: secret} if secret is not None else {}
    body = (FIXTURES / fixture).read_bytes()
    return client.post("/webhooks/labelstudio", content=body, headers=headers)


@pytest.mark.parametrize(
    "fixture",
    [
        "webhook_annotation_created.json",
        "webhook_annotation_updated.json",
        "webhook_annotations_deleted.json",
        "webhook_tasks_deleted.json",
    ],
)
def test_hook_with_the_secret_is_published(
    client: TestClient, published: list[TaskChanged], fixture: str
) -> None:
    response = _post(client, fixture)
    assert response.status_code == 202
    [hint] = published
    assert hint.action == json.loads((FIXTURES / fixture).read_text())["action"]
    assert hint.project == 7
    assert response.json()["task_ids"] == list(hint.task_ids)


@pytest.mark.parametrize("secret", [None, "", "s3cret-valuf", "S3CRET-VALUE", SECRET + "x"])
def test_hook_without_the_right_secret_is_refused(
    client: TestClient, published: list[TaskChanged], secret: str | None
) -> None:
    assert _post(client, "webhook_annotation_created.json", secret).status_code == 401
    assert published == []


def test_secret_is_checked_before_the_body(client: TestClient) -> None:
    response = client.post("/webhooks/labelstudio", content=b"{not json")
    assert response.status_code == 401


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[]", b'{"action": "TASKS_DELETED"}', b'{"action": "NEW_THING", "project": 1}'],
)
def test_malformed_body_is_422(
    client: TestClient, published: list[TaskChanged], body: bytes
) -> None:
    response = client.post("/webhooks/labelstudio", content=body, headers={HEADER: SECRET})
    assert response.status_code == 422
    assert response.json()["detail"]
    assert published == []


def test_action_that_changes_no_label_is_acknowledged_not_published(
    client: TestClient, published: list[TaskChanged]
) -> None:
    response = _post(client, "webhook_project_updated.json")
    assert response.status_code == 200
    assert response.json()["accepted"] is False
    assert published == []


def test_router_refuses_an_empty_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        webhook_router("", lambda hint: None)
