"""A running pipeline per catalog kind, for tests that stop it, inject drift and restart it;
and one reconcile run of a Label Studio project, with the pipeline's commit of its repairs."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from labelflow.catalog.store import Catalog, Deletion
from labelflow.config import Settings
from labelflow.model import AnnotationEvent
from labelflow.reconcile.drift import HELD_SCHEMA
from labelflow.reconcile.listing import LabelStudioSource
from labelflow.reconcile.reconciler import Reconciler
from labelflow.reconcile.runs import RunReport
from labelflow.service import stopped_cleanly
from pipeline_support import RunningPipeline, log_tail, run_pipeline
from support import make_version


@pytest.fixture
def pipeline(
    kafka_settings: Settings, catalog_url: str, tmp_path: Path
) -> Iterator[RunningPipeline]:
    """validate, materialize and commit on private topics, writing to ``catalog_url``; the
    test fails unless every worker running at the end stops cleanly."""
    running = run_pipeline(kafka_settings, tmp_path / "pipeline", catalog_url)
    yield running
    codes = running.stop()
    unclean = {
        w.worker_id: log_tail(w.log_file)
        for w in running.supervisor.workers
        if not stopped_cleanly(codes[w.worker_id])
    }
    assert not unclean, f"workers did not stop cleanly: {unclean}"


NOTHING_HELD = pa.table([[], []], schema=HELD_SCHEMA)
"""No revision held in quarantine (the Label Studio tests run no pipeline)."""

Reconcile = Callable[[Settings, Catalog, int, list[AnnotationEvent]], RunReport]


@pytest.fixture
def reconcile_labelstudio() -> Reconcile:
    """One reconcile run of a Label Studio project, its repairs appended to ``published``."""

    def run(
        settings: Settings, catalog: Catalog, project: int, published: list[AnnotationEvent]
    ) -> RunReport:
        source = LabelStudioSource(settings, project)
        try:
            return Reconciler(
                settings, catalog, source, publish=published.extend, held=lambda: NOTHING_HELD
            ).run()
        finally:
            source.close()

    return run


@pytest.fixture
def commit_events() -> Callable[[Catalog, list[AnnotationEvent]], None]:
    """What the pipeline makes of events in the catalog: a version, or a deletion."""

    def commit(catalog: Catalog, events: list[AnnotationEvent]) -> None:
        catalog.apply(
            [
                Deletion(sample_id=e.task_id, revision=e.revision, reason=str(e.status))
                if e.removes_sample
                else make_version(e.task_id, e.revision)
                for e in events
            ]
        )

    return commit
