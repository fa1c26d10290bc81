"""Reconciling a Label Studio project (the look-alike over real HTTP) with a real catalog:
a task deleted silently, a task edited while nobody listened and a catalog row lost are found
from the project's listing, and repaired with events claimed in the source state."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from labelflow.catalog.store import Catalog
from labelflow.cli import app as cli
from labelflow.config import Settings
from labelflow.model import AnnotationEvent, Status
from labelflow.reconcile.runs import RunReport, samples
from labelflow.sources.labelstudio import task_to_event
from labelflow.sources.state import SourceState
from labelstudio_support import TOKEN, fake_labelstudio

pytestmark = pytest.mark.integration

PROJECT = 7


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as cat:
        cat.migrate()
        yield cat


def test_silent_deletions_edits_and_lost_rows_are_repaired(
    catalog: Catalog,
    reconcile_labelstudio: Callable[..., RunReport],
    commit_events: Callable[..., None],
) -> None:
    with fake_labelstudio() as labelstudio:
        settings = Settings(
            catalog_url=catalog.url,
            labelstudio_url=labelstudio.base_url,
            labelstudio_token=SecretStr(TOKEN),
            labelstudio_project=PROJECT,
        )
        options = settings.labelstudio_mapping
        state = SourceState(catalog)
        # As the labelstudio stage left it: each task's revision claimed, then committed.
        emitted = {}
        for external_id, task in labelstudio.tasks.items():
            event = task_to_event(task, options, PROJECT)
            state.claim(
                f"labelstudio:{PROJECT}",
                external_id,
                task_id=event.task_id,
                revision=event.revision,
                status=event.status,
                emitted_by="sources.changes:0:1",
            )
            emitted[external_id] = event
        commit_events(catalog, list(emitted.values()))
        assert emitted[101].status == Status.SUBMITTED and emitted[102].status == Status.SKIPPED

        del labelstudio.tasks[101]  # deleted in Label Studio, no webhook
        labelstudio.tasks[103]["updated_at"] = "2025-03-05T09:00:00.000000Z"  # edited
        with catalog.transaction(write=True) as conn:  # a row lost from the catalog
            conn.execute(samples.delete().where(samples.c.sample_id == emitted[102].task_id))

        published: list[AnnotationEvent] = []
        report = reconcile_labelstudio(settings, catalog, PROJECT, published)

        assert {k: n for k, n in report.counts.items() if n} == {
            "orphaned": 1,
            "stale": 1,
            "missing": 1,
        }
        by_task = {e.task_id: e for e in published}
        gone = by_task[emitted[101].task_id]
        assert gone.status == Status.DELETED and gone.revision > emitted[101].revision
        assert by_task[emitted[103].task_id].revision > emitted[103].revision
        assert by_task[emitted[102].task_id] == emitted[102]
        known = state.known(f"labelstudio:{PROJECT}", 101)
        assert known is not None and known.status == Status.DELETED
        assert known.emitted_by == f"reconcile:{report.run_id}"

        commit_events(catalog, published)
        again = reconcile_labelstudio(settings, catalog, PROJECT, published)
        assert again.drift == 0 and again.repairs == 0, again.counts

    env = {"LABELFLOW_CATALOG_URL": catalog.url, "LABELFLOW_CONFIG_FILE": "/nonexistent.toml"}
    shown = CliRunner().invoke(cli, ["reconcile", "runs", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    runs = json.loads(shown.stdout)
    assert [r["run_id"] for r in runs] == [again.run_id, report.run_id]
    assert runs[1]["counts"]["orphaned"] == 1 and runs[1]["source"] == f"labelstudio:{PROJECT}"
