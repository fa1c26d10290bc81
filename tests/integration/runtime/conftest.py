"""A private pipeline per test: topics under a unique prefix, workers killed at teardown."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from labelflow.config import Settings
from runtime_support import Pipeline, make_pipeline

RETRY_DELAYS_S = [1.5, 1.5]
"""Short enough for tests; long enough that records behind a retried one visibly overtake it."""


@pytest.fixture
def pipeline(kafka_settings: Settings, tmp_path: Path) -> Iterator[Pipeline]:
    p = make_pipeline(kafka_settings, tmp_path, RETRY_DELAYS_S)
    try:
        yield p
    finally:
        p.close()
