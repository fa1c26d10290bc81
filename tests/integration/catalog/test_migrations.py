"""Alembic migrations take an empty database to the schema the code expects."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from labelflow.catalog.schema import Base
from labelflow.catalog.store import MIGRATIONS_DIR, Catalog

pytestmark = pytest.mark.integration


def test_migrates_empty_database_to_head_matching_the_models(catalog_url: str) -> None:
    head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
    with Catalog(catalog_url) as cat:
        assert cat.schema_revision() is None
        cat.migrate()
        assert cat.schema_revision() == head
        tables = set(inspect(cat.engine).get_table_names())
        assert {"samples", "sample_versions", "sample_tombstones"} <= tables
        with cat.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert diff == [], f"migrations and ORM models disagree: {diff}"


def test_concurrent_migrations_are_safe_and_repeatable(catalog_url: str) -> None:
    catalogs = [Catalog(catalog_url) for _ in range(4)]
    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            list(pool.map(lambda c: c.migrate(), catalogs, timeout=120))
        catalogs[0].migrate()
        head = ScriptDirectory(str(MIGRATIONS_DIR)).get_current_head()
        assert {c.schema_revision() for c in catalogs} == {head}
    finally:
        for c in catalogs:
            c.close()
