"""Alembic migrations of the catalog schema, applied by ``Catalog.migrate``."""
