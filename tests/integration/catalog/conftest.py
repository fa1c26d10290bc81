"""Catalog fixtures: every catalog test runs against real SQLite and real PostgreSQL (the
``catalog_url`` fixture of ``tests/integration/conftest.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from labelflow.catalog.store import Catalog


@pytest.fixture
def catalog(catalog_url: str) -> Iterator[Catalog]:
    """A migrated, empty catalog."""
    with Catalog(catalog_url) as cat:
        cat.migrate()
        yield cat
