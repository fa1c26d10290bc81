"""A whole pipeline per test: validate, materialize and commit as real worker processes on
the session's broker, with private topics, data directory and catalog.

``pipeline`` runs once per catalog kind (SQLite, PostgreSQL); ``start_pipeline`` lets a test
choose its catalog and add worker settings. Teardown stops the workers with SIGTERM and fails
the test unless every one of them exited 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelflow.config import Settings
from pipeline_support import RunningPipeline, StartPipeline, log_tail, run_pipeline


@pytest.fixture
def start_pipeline(kafka_settings: Settings, tmp_path: Path) -> Iterator[StartPipeline]:
    """``start_pipeline(catalog_url=None, env=None)``: a running pipeline (SQLite in its data dir by
    default; ``env`` adds ``LABELFLOW_*`` settings of the workers)."""
    running: list[RunningPipeline] = []

    def begin(catalog_url: str | None = None, env: dict[str, str] | None = None) -> RunningPipeline:
        workdir = tmp_path / f"pipeline-{len(running)}"
        pipeline = run_pipeline(kafka_settings, workdir, catalog_url, env)
        running.append(pipeline)
        return pipeline

    yield begin
    failed = {}
    for pipeline in running:
        codes = pipeline.stop()
        for worker in pipeline.supervisor.workers:
            if codes[worker.worker_id] != 0 or worker.restarts:
                failed[worker.worker_id] = (codes[worker.worker_id], log_tail(worker.log_file))
    assert not failed, f"workers did not exit cleanly: {failed}"


@pytest.fixture
def pipeline(start_pipeline: StartPipeline, catalog_url: str) -> RunningPipeline:
    """A running pipeline writing to an empty catalog of each kind."""
    return start_pipeline(catalog_url)
