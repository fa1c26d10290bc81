"""A running pipeline per catalog kind, for tests that stop it, inject drift and restart it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelflow.config import Settings
from labelflow.service import stopped_cleanly
from pipeline_support import RunningPipeline, log_tail, run_pipeline


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
