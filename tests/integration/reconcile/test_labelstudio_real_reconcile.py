"""Reconciling a real Label Studio project: tasks deleted in Label Studio without any webhook,
a label edited while labelflow listened to nothing, and a catalog row lost are all found from
the project's listing and repaired (the repairs are captured here; the pipeline's path for
them has its own tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from labelflow.catalog.store import Catalog
from labelflow.config import Settings
from labelflow.model import AnnotationEvent, Status
from labelflow.reconcile.runs import RunReport, samples
from labelflow.sources.labelstudio_api import LabelStudioClient
from labelflow.sources.labelstudio_sync import list_tasks, source_of
from labelflow.sources.state import SourceState
from labelstudio_server import LabelStudioServer, start_labelstudio
from labelstudio_support import LABEL_CONFIG
from support import make_version

pytestmark = pytest.mark.integration

SQUARE = [[10.0, 10.0], [40.0, 10.0], [40.0, 40.0], [10.0, 40.0]]


@pytest.fixture(scope="module")
def labelstudio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    with start_labelstudio(tmp_path_factory.mktemp("label-studio")) as server:
        yield server


def polygon(points: list[list[float]]) -> dict[str, Any]:
    """One polygon region, in Label Studio's own result shape (percent of the image)."""
    return {
        "id": "p1",
        "from_name": "poly",
        "to_name": "image",
        "type": "polygonlabels",
        "original_width": 256,
        "original_height": 256,
        "value": {"points": points, "polygonlabels": ["building"], "closed": True},
    }


def test_silent_deletions_in_label_studio_are_found_and_repaired(
    labelstudio: LabelStudioServer,
    catalog_url: str,
    tmp_path: Path,
    reconcile_labelstudio: Callable[..., RunReport],
    commit_events: Callable[..., None],
) -> None:
    ls = labelstudio.client()
    created = ls.post("/api/projects", json={"title": "reconcile", "label_config": LABEL_CONFIG})
    assert created.status_code == 201, created.text
    project = created.json()["id"]
    images = [{"image": f"https://imagery.example.test/chip{n}.png"} for n in range(6)]
    assert ls.post(f"/api/projects/{project}/import", json=images).status_code == 201
    tasks = ls.get("/api/tasks/", params={"project": project, "page_size": 100}).json()["tasks"]
    ids = sorted(t["id"] for t in tasks)
    for task_id in ids:
        answer = ls.post(f"/api/tasks/{task_id}/annotations/", json={"result": [polygon(SQUARE)]})
        assert answer.status_code == 201, answer.text

    settings = Settings(
        data_dir=tmp_path,
        catalog_url=catalog_url,
        labelstudio_url=labelstudio.url,
        labelstudio_token=SecretStr(labelstudio.token),
        labelstudio_project=project,
    )
    with Catalog(catalog_url) as catalog:
        catalog.migrate()
        # What labelflow held before it stopped listening: every task, claimed and committed.
        state = SourceState(catalog)
        with LabelStudioClient(labelstudio.url, labelstudio.token) as client:
            listed = list(list_tasks(client, project, settings.labelstudio_mapping))
        for task in listed:
            state.claim(
                source_of("labelstudio", project),
                task.external_id,
                task_id=task.task_id,
                revision=task.revision,
                status=task.status,
                emitted_by="sources.changes:0:1",
            )
        catalog.apply([make_version(t.task_id, t.revision) for t in listed])
        key = {t.external_id: t.task_id for t in listed}

        # While nobody listened: two tasks deleted, one label edited, one catalog row lost.
        deleted = ids[:2]
        for task_id in deleted:
            assert ls.delete(f"/api/tasks/{task_id}/").status_code == 204
        [annotation] = ls.get(f"/api/tasks/{ids[2]}").json()["annotations"]
        moved = [[x + 5.0, y] for x, y in SQUARE]
        edit = ls.patch(f"/api/annotations/{annotation['id']}/", json={"result": [polygon(moved)]})
        assert edit.status_code == 200, edit.text
        with catalog.transaction(write=True) as conn:
            conn.execute(samples.delete().where(samples.c.sample_id == key[ids[3]]))

        published: list[AnnotationEvent] = []
        report = reconcile_labelstudio(settings, catalog, project, published)

        assert {k: n for k, n in report.counts.items() if n} == {
            "orphaned": 2,
            "stale": 1,
            "missing": 1,
        }
        by_task = {e.task_id: e for e in published}
        for task_id in deleted:
            assert by_task[key[task_id]].status == Status.DELETED
        assert (
            by_task[key[ids[2]]].features[0].geometry != by_task[key[ids[3]]].features[0].geometry
        )

        # Once the pipeline has written the repairs, nothing is left.
        commit_events(catalog, published)
        again = reconcile_labelstudio(settings, catalog, project, published)
        assert again.drift == 0, again.counts
    ls.close()
