"""Reconciling a Label Studio project (the look-alike over real HTTP) with a real catalog:
a task deleted silently, a task edited while nobody listened and a catalog row lost are found
from the project's listing, and repaired with events claimed in the source state."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pyarrow as pa
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from labelflow.catalog.store import Catalog, Deletion
from labelflow.cli import app as cli
from labelflow.config import Settings
from labelflow.model import AnnotationEvent, Status
from labelflow.reconcile.drift import HELD_SCHEMA
from labelflow.reconcile.listing import LabelStudioSource
from labelflow.reconcile.reconciler import Reconciler
from labelflow.reconcile.runs import samples
from labelflow.sources.labelstudio import task_to_event
from labelflow.sources.state import SourceState
from labelstudio_support import TOKEN, fake_labelstudio
from support import make_version

pytestmark = pytest.mark.integration

PROJECT = 7
NOTHING_HELD = pa.table([[], []], schema=HELD_SCHEMA)


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    with Catalog(catalog_url) as cat:
        cat.migrate()
        yield cat


def commit(catalog: Catalog, events: list[AnnotationEvent]) -> None:
    """What the pipeline makes of these events in the catalog."""
    catalog.apply(
        [
            Deletion(sample_id=e.task_id, revision=e.revision, reason=str(e.status))
            if e.removes_sample
            else make_version(e.task_id, e.revision)
            for e in events
        ]
    )


def test_silent_deletions_edits_and_lost_rows_are_repaired(catalog: Catalog) -> None:
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
        commit(catalog, list(emitted.values()))
        assert emitted[101].status == Status.SUBMITTED and emitted[102].status == Status.SKIPPED

        del labelstudio.tasks[101]  # deleted in Label Studio, no webhook
        labelstudio.tasks[103]["updated_at"] = "2025-03-05T09:00:00.000000Z"  # edited
        with catalog.transaction(write=True) as conn:  # a row lost from the catalog
            conn.execute(samples.delete().where(samples.c.sample_id == emitted[102].task_id))

        published: list[AnnotationEvent] = []
        source = LabelStudioSource(settings, PROJECT)
        try:
            report = Reconciler(
                settings, catalog, source, publish=published.extend, held=lambda: NOTHING_HELD
            ).run()
        finally:
            source.close()

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

        commit(catalog, published)
        source = LabelStudioSource(settings, PROJECT)
        try:
            again = Reconciler(settings, catalog, source, publish=published.extend,
                               held=lambda: NOTHING_HELD).run()  # fmt: skip
        finally:
            source.close()
        assert again.drift == 0 and again.repairs == 0, again.counts

    env = {"LABELFLOW_CATALOG_URL": catalog.url, "LABELFLOW_CONFIG_FILE": "/nonexistent.toml"}
    shown = CliRunner().invoke(cli, ["reconcile", "runs", "--json"], env=env)
    assert shown.exit_code == 0, shown.output
    runs = json.loads(shown.stdout)
    assert [r["run_id"] for r in runs] == [again.run_id, report.run_id]
    assert runs[1]["counts"]["orphaned"] == 1 and runs[1]["source"] == f"labelstudio:{PROJECT}"
