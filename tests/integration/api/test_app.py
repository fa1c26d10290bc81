"""The API app over a real SQLite catalog: health, metrics and the read-only samples REST."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from labelflow.api.app import create_app
from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from support import make_version

pytestmark = pytest.mark.integration


@pytest.fixture
def catalog(tmp_path: Path) -> Iterator[Catalog]:
    with Catalog(f"sqlite:///{tmp_path / 'catalog.db'}") as catalog:
        catalog.migrate()
        yield catalog


@pytest.fixture
def api(catalog: Catalog) -> TestClient:
    # No webhook secret: the app must not need Kafka at all then.
    return TestClient(create_app(Settings(labelstudio_webhook_secret=None), catalog))


def test_samples_are_paged_in_id_order(api: TestClient, catalog: Catalog) -> None:
    for sample_id in ("c", "a", "b"):
        catalog.upsert_version(make_version(sample_id, 1))
    first = api.get("/samples", params={"limit": 2}).json()
    assert [s["sample_id"] for s in first["samples"]] == ["a", "b"]
    rest = api.get("/samples", params={"limit": 2, "after": first["next_after"]}).json()
    assert [s["sample_id"] for s in rest["samples"]] == ["c"]
    assert rest["next_after"] is None
    assert api.get("/samples", params={"limit": 0}).status_code == 422


def test_a_sample_is_its_current_version_and_a_deleted_one_is_404(
    api: TestClient, catalog: Catalog
) -> None:
    catalog.upsert_version(make_version("kept", 1))
    catalog.upsert_version(make_version("kept", 2))
    catalog.upsert_version(make_version("gone", 1))
    catalog.tombstone("gone", 3)
    kept = api.get("/samples/kept")
    assert kept.status_code == 200
    assert kept.json()["revision"] == 2
    gone = api.get("/samples/gone")
    assert gone.status_code == 404
    assert "deleted at revision 3" in gone.json()["detail"]
    assert api.get("/samples/never").status_code == 404


def test_health_and_metrics_answer(api: TestClient) -> None:
    assert api.get("/healthz").json()["status"] == "ok"
    metrics = api.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "labelflow_source_hints" in metrics.text


def test_without_a_webhook_secret_there_is_no_webhook_endpoint(api: TestClient) -> None:
    assert api.post("/webhooks/labelstudio", content=b"{}").status_code == 404
